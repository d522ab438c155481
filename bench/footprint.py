"""Footprint of the node next to the controller: import time, peak RSS, a running node's RSS.

    python -m bench.footprint            # 5 import runs per entry, nodes at 1080p and 12 MP
    python -m bench.footprint --quick    # 3 import runs, 1080p only

Prints, side by side in one run (this machine is shared and noisy, so ratios matter more than
absolute figures): import time and peak RSS of ``pepi node``'s entry against ``pepi
controller``'s, then a running ``pepi node`` (synthetic camera, MJPEG previews on) idle and
after 10 captures at 1920x1080 and at 4056x3040. Target: a node idle at 1080p under 80 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.fleet import PORTS, Fleet, NodeSpec, logins, start_broker
from bench.report import machine_line
from bench.tap import Tap

# What each entry point loads before it serves: the CLI group, the sub-command's module and
# what it imports when it runs (the controller's web server is imported lazily by its command).
ENTRIES = {
    "node": "pepi_fleet.node.cli:node_command",
    "controller": (
        "pepi_fleet.controller.commands:controller_command+pepi_fleet.controller.web.server"
    ),
}
PROBE = """
import importlib, json, resource, sys, time
t0 = time.perf_counter()
import pepi_fleet.cli
target, *more = sys.argv[1].split("+")
module, attr = target.split(":")
getattr(importlib.import_module(module), attr)
for name in more:
    importlib.import_module(name)
elapsed = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"s": elapsed, "peak_mb": peak_kb / 1024, "modules": len(sys.modules)}))
"""
TARGET_IDLE_MB = 80.0
TARGET_12MP_START_PEAK_MB = 150.0
CAPTURES = 10


def import_footprint(entry: str, runs: int) -> dict[str, float]:
    """Median import time, peak RSS and module count of one entry over ``runs`` fresh processes."""
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, ENTRIES[entry]],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        samples.append(json.loads(out.stdout))
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def node_footprint(resolution: str, workdir: Path) -> dict[str, float]:
    """RSS of one running node: idle after start, and after 10 captures at ``resolution``."""
    node_id = "foot" + resolution.replace("x", "_")
    passwords = logins([node_id])
    broker = start_broker(passwords, workdir / "broker")
    tap = Tap(broker.port)
    root = f"bench/{uuid.uuid4().hex[:8]}"
    fleet = Fleet(root, passwords, workdir / "nodes")
    try:
        tap.watch(root)
        since = time.time()
        flags = ("--resolution", resolution, "--stream-port", str(PORTS.take()))
        fleet.start([NodeSpec(node_id, PORTS.take(), broker.port, flags)])
        fleet.wait_online(tap, [node_id], since, timeout=60)
        time.sleep(3)  # past start-up: the first heartbeat, the camera's first frames
        pid = fleet.nodes[0].proc.pid
        idle, start_peak = rss_mb(pid)
        for i in range(CAPTURES):
            capture_id = f"foot-{i}"
            tap.trigger(root, capture_id)
            got = tap.wait_results(capture_id, 1, timeout=60)
            if node_id not in got:
                raise RuntimeError(f"no result for {capture_id}:\n{fleet.nodes[0].log_tail()}")
        time.sleep(1)
        after, peak = rss_mb(pid)
        return {"idle_mb": idle, "start_peak_mb": start_peak, "after_mb": after, "peak_mb": peak}
    finally:
        fleet.stop()
        tap.close()
        broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 import runs, 1080p only")
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    resolutions = ["1920x1080"] if args.quick else ["1920x1080", "4056x3040"]

    print(machine_line())
    print(f"# import of the entry point (median of {runs} fresh processes)")
    print(f"{'entry':<12}{'time s':>9}{'peak RSS MB':>14}{'modules':>10}")
    measured = {entry: import_footprint(entry, runs) for entry in ENTRIES}
    for entry, m in measured.items():
        print(f"{entry:<12}{m['s']:>9.3f}{m['peak_mb']:>14.1f}{m['modules']:>10.0f}")
    node, ctl = measured["node"], measured["controller"]
    ratios = {key: node[key] / ctl[key] for key in ("s", "peak_mb", "modules")}
    print(
        f"node / controller: time {ratios['s']:.2f}, peak RSS {ratios['peak_mb']:.2f}, "
        f"modules {ratios['modules']:.2f}"
    )

    print(f"\n# a running pepi node (synthetic camera, previews on), {CAPTURES} immediate captures")
    print(f"{'resolution':<12}{'idle MB':>9}{'start peak':>12}{'after MB':>10}{'peak MB':>9}")
    with tempfile.TemporaryDirectory(prefix="pepi-footprint-") as tmp:
        for resolution in resolutions:
            m = node_footprint(resolution, Path(tmp) / resolution)
            print(
                f"{resolution:<12}{m['idle_mb']:>9.1f}{m['start_peak_mb']:>12.1f}"
                f"{m['after_mb']:>10.1f}{m['peak_mb']:>9.1f}"
            )
            if resolution == "1920x1080":
                verdict = "met" if m["idle_mb"] < TARGET_IDLE_MB else "MISSED"
                print(f"  target idle < {TARGET_IDLE_MB:.0f} MB at 1080p: {verdict}")
            if resolution == "4056x3040":
                met = m["start_peak_mb"] < TARGET_12MP_START_PEAK_MB
                print(
                    f"  target start-up peak < {TARGET_12MP_START_PEAK_MB:.0f} MB at 12 MP: "
                    + ("met" if met else "MISSED")
                )


if __name__ == "__main__":
    main()
