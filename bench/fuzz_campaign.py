"""A long fuzz campaign against one node: >= 10,000 Hypothesis inputs on every topic it reads.

    python -m bench.fuzz_campaign                  # 10,000 inputs per topic (tens of minutes)
    python -m bench.fuzz_campaign --inputs 200     # a smoke run
    python -m bench.fuzz_campaign --check-every 1  # a full check after every input (slower)

The node is a real NodeAgent (synthetic camera, real store) on a mosquitto of its own on
loopback; inputs go through the MQTT link's message callback as paho's thread would deliver
them (random bytes, deep nesting, huge numbers, NaN/inf, unicode, path-traversal ids,
oversize, retained flags and message expiries; see ``tests/support/fuzz.py``). Every
``--check-every`` inputs, and at the end, it checks that every worker is alive, that a valid
capture succeeds and that the capture stored first is byte-for-byte intact; the first
failure stops the campaign and is printed with the input that caused it. Prints, per topic:
inputs, time, handler time (mean and worst, on the thread paho would call), the results'
statuses. Needs the test extras (Hypothesis).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the strategies and the harness live with the tests

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from support.fuzz import TOPIC_KINDS, FuzzInput, FuzzNode, inputs  # noqa: E402

from pepi_fleet.broker.runner import EmbeddedBroker  # noqa: E402

ROOT = "pepi/fuzz"


def run_topic(node: FuzzNode, kind: str, count: int, check_every: int) -> float:
    """Feed ``count`` inputs to one topic; seconds taken."""
    began = time.perf_counter()
    fed = 0

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # a campaign explores; the CI test shrinks what it finds
        suppress_health_check=list(HealthCheck),
    )
    @given(item=inputs(kind))
    def campaign(item: FuzzInput) -> None:
        nonlocal fed
        try:
            node.feed(kind, item)
            fed += 1
            if fed % check_every == 0:
                node.check()
        except BaseException:
            print(f"\n{kind}: failed on input #{fed}: {item!r:.600}", file=sys.stderr)
            raise

    campaign()
    node.check()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per topic")
    parser.add_argument("--check-every", type=int, default=50, help="inputs between checks")
    parser.add_argument("--topics", nargs="*", choices=TOPIC_KINDS, default=list(TOPIC_KINDS))
    parser.add_argument("--log", type=Path, help="the node's log (default: only critical)")
    opts = parser.parse_args()
    if opts.log:
        logging.basicConfig(filename=opts.log, level=logging.INFO)
    else:
        logging.basicConfig(level=logging.CRITICAL)  # every bad input is logged: thousands
    with tempfile.TemporaryDirectory(prefix="pepi-fuzz-") as tmp:
        work = Path(tmp)
        broker = EmbeddedBroker(
            root=ROOT, persistence=False, workdir=work / "broker", users={}
        ).start()
        (work / "node").mkdir()
        node = FuzzNode(broker, ROOT, work / "node" / "data")
        rows = []
        try:
            for kind in opts.topics:
                before = dict(node.tap.statuses)
                seconds = run_topic(node, kind, opts.inputs, max(1, opts.check_every))
                statuses = {
                    k: v - before.get(k, 0)
                    for k, v in node.tap.statuses.items()
                    if v - before.get(k, 0)
                }
                rows.append((kind, seconds, dict(statuses)))
                print(f"{kind}: done in {seconds:.1f} s", file=sys.stderr)
        finally:
            node.close()
            broker.close()
    stats = node.stats
    print(f"\nfuzz campaign: {opts.inputs} inputs per topic, a check every {opts.check_every}")
    header = f"{'topic':<14}{'inputs':>8}{'time s':>9}{'mean ms':>9}{'worst ms':>10}"
    print(header + "  results (the checks' captures included)")
    for kind, seconds, statuses in rows:
        n = stats.inputs[kind]
        mean = 1000 * stats.handler_s.get(kind, 0.0) / max(n, 1)
        worst = 1000 * stats.slowest_s.get(kind, 0.0)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "-"
        print(f"{kind:<14}{n:>8}{seconds:>9.1f}{mean:>9.2f}{worst:>10.1f}  {shown}")
    print(f"checks passed: {stats.checks} (node alive, valid capture ok, stored capture intact)")


if __name__ == "__main__":
    main()
