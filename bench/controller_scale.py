"""One real ``pepi controller`` against N simulated nodes (``bench/fleet_sim.py``), N side by side.

For each N (default 100, 500, 1000) on a fresh mosquitto with the queue limits of the
checkout's ``broker/mosquitto.conf``:

1. start the controller, then the fleet: time until ``GET /api/nodes`` lists all N online;
2. steady heartbeats for ``--window`` s (60; 15 with ``--quick``): the controller's CPU % of
   one core and RSS, the nodes ``/api/nodes`` showed not online (every simulated node is
   alive), the sim's message rate to the controller;
3. one full-fleet capture (an immediate trigger with the controller's 2 s expiry): time from
   the trigger and from the last node result to the controller's first summary (the results),
   and from the last result to the summary that says every image is in; results recorded /
   expected, images on disk verified against the nodes' sha256 / expected;
4. ``/api/nodes`` and ``/api/captures`` median latency (15 requests each, idle fleet);
5. controller restart with the retained burst waiting: time until all N online again.

``--baseline DIR`` runs the same for the controller (and broker limits) of another checkout
(e.g. ``git archive <commit> | tar -x -C DIR``) and prints both with their ratio. A test tool:
not part of the pass/fail suite.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.fleet_sim import FleetSim, start_sim_broker
from bench.report import fmt_value, machine_line, table
from pepi_fleet.broker.runner import EmbeddedBroker, die_with_parent, free_port, terminate
from pepi_fleet.core.mqtt_link import expiry_properties
from pepi_fleet.schemas.capture import CaptureCommand
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.topics import Topics

HERE = Path(__file__).resolve().parents[1]
TARGET_N = 1000
API_REQUESTS = 15
QUEUE_KEYS = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages")


class ScaleBroker(EmbeddedBroker):
    """The embedded broker with the queue limits of a given ``mosquitto.conf``."""

    limits: dict[str, str] = {}

    def _config_text(self) -> str:
        kept = [
            line
            for line in super()._config_text().splitlines()
            if line.split(" ", 1)[0] not in QUEUE_KEYS
        ]
        return "\n".join([*kept, *(f"{k} {v}" for k, v in self.limits.items())]) + "\n"


def queue_limits(conf: Path) -> dict[str, str]:
    """The queue settings a shipped ``mosquitto.conf`` sets (absent ones: mosquitto's default)."""
    found = {}
    for line in conf.read_text().splitlines():
        m = re.match(r"^\s*(\w+)\s+(\S+)", line)
        if m and m.group(1) in QUEUE_KEYS:
            found[m.group(1)] = m.group(2)
    return found


@dataclass
class Figures:
    """What one run measured for one N."""

    nodes: int
    fleet_online_s: float | None = None
    restart_online_s: float | None = None
    restart_api_s: float | None = None
    cpu_pct: float | None = None
    rss_mb: float | None = None
    msgs_per_s: float | None = None
    not_online_max: int | None = None
    nodes_ms: float | None = None
    captures_ms: float | None = None
    trigger_to_summary_s: float | None = None
    capture_cpu_pct: float | None = None
    last_result_to_summary_s: float | None = None
    last_result_to_downloaded_s: float | None = None
    results: str = "-"
    images: str = "-"
    broker_drops: int | None = None
    error: str | None = None


class ControllerProc:
    """``python -m pepi_fleet controller`` from this checkout or ``checkout``."""

    def __init__(self, checkout: Path | None, broker: EmbeddedBroker, password: str, root: str,
                 workdir: Path) -> None:  # fmt: skip
        self.checkout = checkout
        self.broker, self.password, self.root = broker, password, root
        self.data_dir = workdir / "data"
        self.log_path = workdir / "controller.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        env = {**os.environ, "PEPI_MQTT_PASSWORD": self.password, "PYTHONUNBUFFERED": "1"}
        if self.checkout is not None:
            env["PYTHONPATH"] = str(self.checkout)
        args = ["--broker", self.broker.url, "--username", "controller", "--topic-root", self.root,
                "--data-dir", str(self.data_dir), "--web-port", str(self.port)]  # fmt: skip
        started = time.time()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pepi_fleet", "controller", *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                # -m puts the working directory first on sys.path: run in the checkout measured
                cwd=self.checkout or HERE, preexec_fn=die_with_parent(os.getpid()),
            )  # fmt: skip
        return started

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=20)


class Observer:
    """Anonymous MQTT client: publishes triggers, receives the controller's summaries."""

    def __init__(self, port: int, root: str) -> None:
        self.topics = Topics(root)
        self.summaries: dict[str, list[tuple[float, CaptureSetSummary]]] = {}
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"scale-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(self.topics.controller_captures(), qos=1)
        self._client.loop_start()

    def trigger(self, capture_id: str, expiry_s: int = 2) -> float:
        payload = CaptureCommand(capture_id=capture_id).model_dump_json(exclude_none=True)
        sent = time.time()
        properties = expiry_properties(expiry_s)
        self._client.publish(self.topics.capture(), payload, qos=1, properties=properties)
        return sent

    def wait_summary(
        self, capture_id: str, timeout: float
    ) -> list[tuple[float, CaptureSetSummary]]:
        """Summaries of ``capture_id`` until one says downloaded (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(s.downloaded for _, s in self.summaries.get(capture_id, [])):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.summaries.get(capture_id, []))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        summary = CaptureSetSummary.model_validate_json(msg.payload)
        with self._cond:
            self.summaries.setdefault(summary.capture_id, []).append((time.time(), summary))
            self._cond.notify_all()


def wait_online(http: httpx.Client, count: int, timeout: float, poll_s: float) -> float | None:
    """When ``/api/nodes`` first listed ``count`` nodes online; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if http.get("/api/nodes").json()["counts"]["online"] >= count:
                return time.time()
        time.sleep(poll_s)
    return None


def wait_api(http: httpx.Client, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if http.get("/api/nodes").status_code == 200:
                return time.time()
        time.sleep(0.1)
    return None


def median_ms(http: httpx.Client, path: str) -> float:
    times = []
    for _ in range(API_REQUESTS):
        t = time.perf_counter()
        http.get(path).raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def verified_images(data_dir: Path, capture_id: str, sim: FleetSim) -> tuple[int, int]:
    """(files on disk whose sha256 is the node's, images the nodes took)."""
    expected = verified = 0
    for node_id, result in sim.results.get(capture_id, {}).items():
        for frame in result.frames:
            expected += 1
            path = data_dir / capture_id / f"id{node_id}_d{capture_id}_cam{frame.camera}.jpeg"
            with contextlib.suppress(OSError):
                verified += hashlib.sha256(path.read_bytes()).hexdigest() == frame.sha256
    return verified, expected


def run_one(fig: Figures, checkout: Path | None, args: argparse.Namespace, workdir: Path) -> None:
    """Measure one N into ``fig`` (what was measured stays there if a later step fails)."""
    n = fig.nodes
    workdir.mkdir(parents=True)
    conf = (checkout or HERE) / "broker" / "mosquitto.conf"
    broker = ScaleBroker(root="scale/+", persistence=False, workdir=workdir / "broker")
    broker.limits = queue_limits(conf)
    broker.users["controller"] = ctl_pw = secrets.token_urlsafe(12)
    start_sim_broker(broker, sim_pw := secrets.token_urlsafe(12))
    root = f"scale/n{n}"
    ctl = ControllerProc(checkout, broker, ctl_pw, root, workdir)
    sim = FleetSim(broker.url, root, n, password=sim_pw, image_bytes=args.image_kib * 1024 or None)
    observer = Observer(broker.port, root)
    http = httpx.Client(base_url=ctl.url, timeout=30)
    poll = 0.25
    try:
        ctl.start()
        if wait_api(http, 60) is None:
            raise RuntimeError(f"controller API never answered; log: {ctl.log_path}")
        sim.start(60, announce=False)
        announced = sim.announce()
        online = wait_online(http, n, args.timeout, poll)
        fig.fleet_online_s = None if online is None else online - announced

        time.sleep(args.settle)
        before, counts0, t0 = ctl.cpu_s(), dict(sim.counts), time.time()
        not_online = 0
        while time.time() - t0 < args.window:  # polled rarely: the bench's load, not the fleet's
            time.sleep(min(20.0, args.window - (time.time() - t0)) or 0.01)
            report = http.get("/api/nodes").json()["counts"]
            not_online = max(not_online, n - report["online"])
        elapsed = time.time() - t0
        fig.cpu_pct = (ctl.cpu_s() - before) / elapsed * 100
        fig.rss_mb = ctl.rss_mb()
        sent = sum(sim.counts[k] - counts0.get(k, 0) for k in ("statuses", "pongs"))
        fig.msgs_per_s = sent / elapsed
        fig.not_online_max = not_online

        capture_id = f"scale-{n}-{secrets.token_hex(2)}"
        cpu_before = ctl.cpu_s()
        triggered = observer.trigger(capture_id)
        summaries = observer.wait_summary(capture_id, args.timeout)
        fig.capture_cpu_pct = (ctl.cpu_s() - cpu_before) / (time.time() - triggered) * 100
        if summaries:
            # the first summary (the results), and the one that says every image is in
            first = summaries[0][0]
            done = next((t for t, s in summaries if s.downloaded), None)
            fig.trigger_to_summary_s = first - triggered
            last = sim.last_result_at.get(capture_id)
            if last is not None:
                fig.last_result_to_summary_s = first - last
                fig.last_result_to_downloaded_s = None if done is None else done - last
            final = summaries[-1][1]
            answered = sum(o.status is not None for o in final.outcomes)
            fig.results = f"{answered}/{len(final.expected)}"
        verified, expected = verified_images(ctl.data_dir, capture_id, sim)
        fig.images = f"{verified}/{expected}"

        fig.nodes_ms = median_ms(http, "/api/nodes")
        fig.captures_ms = median_ms(http, "/api/captures")

        ctl.stop()
        started = ctl.start()
        api = wait_api(http, 60)
        online = wait_online(http, n, args.timeout, poll)
        fig.restart_api_s = None if api is None else api - started
        fig.restart_online_s = None if online is None else online - started
    finally:
        http.close()
        ctl.stop()
        sim.stop()
        observer.close()
        broker.stop()
        fig.broker_drops = broker.log_path.read_text(errors="replace").count("being dropped")


ROWS: list[tuple[str, str, int]] = [
    ("fleet start -> all online (s)", "fleet_online_s", 2),
    ("controller restart -> all online (s)", "restart_online_s", 2),
    ("  of which the API coming up (s)", "restart_api_s", 2),
    ("controller CPU, steady (% of a core)", "cpu_pct", 1),
    ("controller RSS (MB)", "rss_mb", 0),
    ("messages to the controller (/s)", "msgs_per_s", 0),
    ("nodes shown not online (max)", "not_online_max", 0),
    ("/api/nodes median (ms)", "nodes_ms", 1),
    ("/api/captures median (ms)", "captures_ms", 1),
    ("full-fleet trigger -> summary (s)", "trigger_to_summary_s", 2),
    ("last result -> summary (s)", "last_result_to_summary_s", 2),
    ("last result -> 'downloaded' summary (s)", "last_result_to_downloaded_s", 2),
    ("controller CPU, trigger to downloaded (%)", "capture_cpu_pct", 0),
    ("results recorded / expected", "results", 0),
    ("images verified on disk / expected", "images", 0),
    ("broker 'messages being dropped' lines", "broker_drops", 0),
]


def targets(fig: Figures) -> list[tuple[str, bool]]:
    def at_most(value: float | None, bound: float) -> bool:
        return value is not None and value < bound

    n = fig.nodes
    return [
        ("all online < 5 s", at_most(fig.fleet_online_s, 5) and at_most(fig.restart_online_s, 5)),
        ("steady CPU < 10 % of a core", at_most(fig.cpu_pct, 10)),
        ("/api/nodes < 100 ms", at_most(fig.nodes_ms, 100)),
        (f"{n}/{n} results recorded", fig.results == f"{n}/{n}"),
        ("summary < 2 s after the last result", at_most(fig.last_result_to_summary_s, 2)),
        (f"every image downloaded and verified ({n})", fig.images == f"{n}/{n}"),
        ("nothing shown stale that is not", fig.not_online_max == 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--quick", action="store_true", help="15 s heartbeat window")
    parser.add_argument("--window", type=float, help="steady window (s); default 60, quick 15")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--image-kib", type=int, default=0, help="pad each image to this size")
    parser.add_argument("--baseline", type=Path, help="another checkout's controller, side by side")
    parser.add_argument("--baseline-only", action="store_true", help="measure only --baseline")
    args = parser.parse_args()
    args.window = args.window or (15.0 if args.quick else 60.0)
    print(machine_line(), flush=True)
    print(
        f"$ {' '.join([Path(sys.executable).name, '-m', 'bench.controller_scale', *sys.argv[1:]])}"
    )
    variants: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline is not None:
        variants.insert(0, ("base", args.baseline.resolve()))
        if args.baseline_only:
            variants.pop()
    workdir = Path(tempfile.mkdtemp(prefix="pepi-scale-"))
    results: dict[tuple[str, int], Figures] = {}
    try:
        for n in args.nodes:
            for name, checkout in variants:
                load = " ".join(f"{v:.2f}" for v in os.getloadavg())
                print(f"-- N={n} {name}: load average {load}", flush=True)
                fig = results[name, n] = Figures(n)
                try:
                    run_one(fig, checkout, args, workdir / f"{name}-{n}")
                except Exception as exc:  # one N failing must not lose the others' figures
                    print(f"   N={n} {name} failed: {exc!r}", flush=True)
                    fig.error = repr(exc)[:60]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header = ["", *(f"N={n}" + (f" {v}" if len(variants) > 1 else "") for n in args.nodes
                    for v, _ in variants)]  # fmt: skip
    rows = [
        [
            label,
            *(
                fmt_value(getattr(results[v, n], key), digits)
                for n in args.nodes
                for v, _ in variants
            ),
        ]
        for label, key, digits in ROWS
    ]
    print(table(header, rows))
    if TARGET_N in args.nodes:
        print(f"\ntargets at N={TARGET_N} ({variants[-1][0]}):")
        for label, met in targets(results[variants[-1][0], TARGET_N]):
            print(f"  {'MET    ' if met else 'NOT MET'}  {label}")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
