"""``pepi demo``: nodes online fast, captures land as JPEGs, nothing survives its exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support.mqtt_watch import Seen, Watcher

from pepi_fleet.broker.runner import BrokerError, find_mosquitto, free_port
from pepi_fleet.schemas import CaptureResult, CaptureStatus

PEPI = [sys.executable, "-m", "pepi_fleet"]
NODES = ["cam01", "cam02", "cam03"]

pytestmark = pytest.mark.system


@pytest.fixture(autouse=True)
def _needs_linux_and_mosquitto() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the demo's child processes")
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(str(exc))


class RunningDemo:
    """``pepi demo`` as a user starts it, output to a file."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.data_dir = base / "demo"
        self.out = base / "demo.out"
        args = ["demo", "--mqtt-port", str(self.port), "--web-port", str(free_port())]
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [*PEPI, *args, "--data-dir", str(self.data_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def broker(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def demo(tmp_path: Path) -> Any:
    running = RunningDemo(tmp_path)
    yield running
    running.stop()


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start time, state) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process below ``pid``."""
    table = proc_table()
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, start, _state) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def survivors(recorded: dict[int, int]) -> list[str]:
    """The recorded processes still running (same pid and start time, not a zombie)."""
    table = proc_table()
    alive = []
    for pid, start in recorded.items():
        row = table.get(pid)
        if row is not None and row[1] == start and row[2] != "Z":
            alive.append(f"{pid}: {cmdline(pid)}")
    return alive


def wait_online(demo: RunningDemo, timeout: float) -> list[dict[str, Any]]:
    """``pepi nodes --json`` until every demo node is online."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert demo.proc.poll() is None, f"demo exited:\n{demo.output()}"
        result = subprocess.run(
            [*PEPI, "nodes", "--json", "--broker", demo.broker],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode == 0:
            rows = json.loads(result.stdout)
            if sorted(r["node_id"] for r in rows if r["state"] == "online") == NODES:
                return rows
        time.sleep(0.2)
    raise AssertionError(f"not 3 online nodes within {timeout} s: {rows}\n{demo.output()}")


def assert_clocks_measured(rows: list[dict[str, Any]]) -> None:
    """``pepi nodes`` measured every online node's clock: on loopback, about zero offset."""
    for row in rows:
        if row["state"] != "online":
            continue
        offset, rtt = row["clock_offset_s"], row["clock_rtt_s"]  # seconds, as /api/nodes
        assert offset is not None and rtt is not None, row
        assert abs(offset) < 0.050 and rtt >= 0, row


def pepi_capture(demo: RunningDemo, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PEPI, "capture", *args, "--broker", demo.broker],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def is_result(topic: str, id_prefix: str, seen: Seen) -> bool:
    if seen.topic != topic:
        return False
    return (CaptureResult.model_validate_json(seen.payload).capture_id or "").startswith(id_prefix)


def run_printed_triggers(demo: RunningDemo) -> None:
    """The mosquitto_pub one-liners the demo prints, run in bash: each fires every node."""
    lines = [ln.strip() for ln in demo.output().splitlines()]
    pubs = [ln for ln in lines if ln.startswith("mosquitto_pub ")]
    assert len(pubs) == 3, demo.output()
    watcher = Watcher(demo.port, ["pepi/v1/nodes/+/result"])
    try:
        for line in pubs:
            subprocess.run(["bash", "-c", line], check=True, timeout=10)
        for node in NODES:
            for id_prefix in ("scan-042", "scan-043", "auto-"):
                seen = watcher.wait_for(
                    partial(is_result, f"pepi/v1/nodes/{node}/result", id_prefix),
                    what=f"{node} result {id_prefix}",
                )
                result = CaptureResult.model_validate_json(seen.payload)
                assert result.status == CaptureStatus.OK, result
    finally:
        watcher.close()


def test_demo_brings_three_nodes_online_captures_and_stops_without_orphans(
    demo: RunningDemo,
) -> None:
    assert_clocks_measured(wait_online(demo, timeout=15))
    result = pepi_capture(demo, "--wait", "--timeout", "30")
    files = [Path(line) for line in result.stdout.splitlines() if line.endswith(".jpeg")]
    assert len(files) == 3, result.stdout
    for path in files:
        assert path.is_relative_to(demo.data_dir / "captures")
        with Image.open(path) as image:
            assert image.format == "JPEG"

    # A scheduled capture warns before it is sent about clocks beyond the tolerance.
    strict = pepi_capture(demo, "--delay", "0.5", "--clock-tolerance-ms", "0.001")
    lines = strict.stderr.splitlines()
    warned = [ln for ln in lines if ln.startswith("clock warning: ")]
    assert [ln.split()[2] for ln in warned] == [f"{n}:" for n in NODES], strict.stderr
    assert all(ln.endswith("exceeds 0.001 ms") for ln in warned), strict.stderr
    triggered = next(i for i, ln in enumerate(lines) if ln.startswith("triggered "))
    assert triggered > lines.index(warned[-1]), strict.stderr
    relaxed = pepi_capture(demo, "--delay", "0.5", "--clock-tolerance-ms", "1000")
    assert "clock warning" not in relaxed.stderr, relaxed.stderr

    run_printed_triggers(demo)

    children = descendants(demo.proc.pid)
    commands = [cmdline(pid) for pid in children]
    for expected in ["mosquitto -c", " controller --broker", *(f"--node-id {n} " for n in NODES)]:
        assert sum(expected in c for c in commands) == 1, (expected, commands)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(30) == 0, demo.output()
    assert survivors(children) == []
    assert "ready" in demo.output()


def node_pid(demo: RunningDemo, node_id: str, not_pid: int = 0, timeout: float = 15) -> int:
    """The pid of the demo's ``node_id`` process (another than ``not_pid``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, (ppid, _start, state) in proc_table().items():
            mine = ppid == demo.proc.pid and pid != not_pid and state != "Z"
            if mine and f"--node-id {node_id} " in cmdline(pid):
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no {node_id} process within {timeout} s:\n{demo.output()}")


def test_demo_restarts_a_node_that_died_and_gives_up_on_a_crash_loop(
    demo: RunningDemo,
) -> None:
    wait_online(demo, timeout=15)
    children = descendants(demo.proc.pid)
    victim = node_pid(demo, "cam02")
    os.kill(victim, signal.SIGKILL)  # as a crash would: restarted, like systemd would
    rows = wait_online(demo, timeout=30)
    assert "cam02 was killed by SIGKILL: restarting it" in demo.output()
    assert {r["node_id"] for r in rows if r["state"] == "online"} == set(NODES)
    # a crash loop: the restart burst is used up, then the demo names it and stops
    for _ in range(3):
        victim = node_pid(demo, "cam02", not_pid=victim)
        children.update(descendants(demo.proc.pid))
        os.kill(victim, signal.SIGKILL)
    assert demo.proc.wait(30) != 0
    output = demo.output()
    assert "cam02 was killed by SIGKILL" in output
    assert "cam02 died 4 times within 60 s: not restarted" in output
    assert str(demo.data_dir / "logs" / "cam02.log") in output
    assert survivors(children) == []
