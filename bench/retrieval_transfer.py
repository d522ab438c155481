"""The controller's retrieval with ``stream_image`` against the whole-image ``fetch_image`` RPC.

    python -m bench.retrieval_transfer              # 5 nodes at 12 MP, 12 captures per way
    python -m bench.retrieval_transfer --quick      # 2 nodes, 2 captures per way

Everything but the transfer is the same: one Ledger and Downloader per way for the whole run,
the same nodes, captures taken alternately for each way (each capture is retrieved by one way,
which releases it), and raw TCP of the same bytes timed before each. Prints MB/s p50 per way.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from bench.fleet import PORTS
from bench.raw_tcp import RawServer
from bench.report import machine_line
from bench.retrieval import MB, SETTLE_S, capture, log, setup
from bench.retrieval_paths import THRIFT_TIMEOUT_MS, Endpoint, time_raw, verify_files
from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.ledger import Ledger
from pepi_fleet.controller.node_client import NodeClientFactory, ReceivedImage, Sink
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.node.secret import SECRET_FILE

WAYS = ("stream_image", "fetch_image")


class BlobClient(ThriftNodeClient):
    """The controller's client as before ``stream_image``: the whole image as one Thrift
    ``binary`` (``fetch_image``), hashed once it is all in memory."""

    def receive_image(
        self, capture_id: str, camera: int, fmt: str, sink: Sink, max_bytes: int
    ) -> ReceivedImage:
        blob = self._call(
            f"fetch_image of {capture_id}",
            lambda c, s: c.fetch_image(capture_id, camera, fmt, s),
        )
        data = blob.data or b""
        sink(memoryview(data))
        return ReceivedImage(len(data), hashlib.sha256(data).hexdigest(), blob.sha256, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--reps", type=int, default=12, help="captures per way")
    parser.add_argument("--quick", action="store_true", help="2 nodes, 2 captures per way")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.reps = 2, 2
    print(machine_line(), flush=True)
    speeds: dict[str, list[float]] = {way: [] for way in (*WAYS, "raw-tcp")}
    with tempfile.TemporaryDirectory(prefix="pepi-bench-transfer-") as tmp:
        workdir = Path(tmp)
        with setup(args.nodes, workdir) as ctx:
            ids = list(ctx.endpoints)
            secrets = {n: (ctx.fleet.workdir / n / SECRET_FILE).read_text().strip() for n in ids}

            def factory(way: str) -> type[ThriftNodeClient]:
                return ThriftNodeClient if way == "stream_image" else BlobClient

            def clients(cls: type[ThriftNodeClient]) -> NodeClientFactory:
                def make(node: str, endpoint: Endpoint) -> ThriftNodeClient:
                    return cls(node, endpoint, THRIFT_TIMEOUT_MS, secret=lambda: secrets[node])

                return make

            ledgers = {way: Ledger(workdir / way) for way in WAYS}
            downloaders = {
                way: Downloader(
                    ledgers[way],
                    workdir / way,
                    ctx.endpoints.get,
                    clients(factory(way)),
                )
                for way in WAYS
            }
            raw = RawServer(PORTS.take()).start()
            try:
                for rep in range(args.reps):
                    for way in WAYS if rep % 2 == 0 else WAYS[::-1]:
                        cid = f"{way[:5]}-{rep:02d}"
                        results = capture(ctx, ids, cid)
                        sizes = [sum(f.bytes for f in r.frames) for r in results.values()]
                        time.sleep(SETTLE_S)
                        speeds["raw-tcp"].append(sum(sizes) / time_raw(raw.port, sizes) / MB)
                        ledger = ledgers[way]
                        ledger.record_set(cid, time.time(), sorted(results))
                        for result in results.values():
                            ledger.record_result(cid, result)
                        began = time.perf_counter()
                        for future in [downloaders[way].submit(n) for n in ids]:
                            future.result()
                        speeds[way].append(sum(sizes) / (time.perf_counter() - began) / MB)
                        if ledger.nodes_owing(cid):
                            raise RuntimeError(f"{way}: {cid} not downloaded")
                        verify_files(workdir / way, cid, results)
                    log(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in speeds.items()))
            finally:
                raw.stop()
                for downloader in downloaders.values():
                    downloader.close()
                for ledger in ledgers.values():
                    ledger.close()
    raw_p50 = statistics.median(speeds["raw-tcp"])
    print(f"\nN={args.nodes} nodes at 12 MP, {args.reps} captures per way (MB = 10^6 bytes)")
    print(f"{'way':<14}{'MB/s p50':>10}{'min':>7}{'max':>7}{'of raw-tcp':>12}")
    for way, values in speeds.items():
        p50 = statistics.median(values)
        print(f"{way:<14}{p50:>10.0f}{min(values):>7.0f}{max(values):>7.0f}{p50 / raw_p50:>12.0%}")
    ratio = statistics.median(speeds["stream_image"]) / statistics.median(speeds["fetch_image"])
    print(f"stream_image / fetch_image (p50): {ratio:.2f}")


if __name__ == "__main__":
    main()
