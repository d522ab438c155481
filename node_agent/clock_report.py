"""How well this node's clock is synchronised: chrony, systemd-timesyncd, or the kernel."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pepi_fleet.node.clock_sync import KernelClock, kernel_clock

ClockSource = Literal["chrony", "timesyncd", "kernel", "unknown"]
COMMAND_TIMEOUT_S = 3.0

Run = Callable[[list[str]], str | None]
"""Runs a command, returning its stdout, or None if it is missing or failed."""


@dataclass(frozen=True)
class ClockReport:
    """What the time daemon (or the kernel) says about the system clock."""

    source: ClockSource
    synced: bool | None
    offset_s: float | None = None
    """System clock minus the reference (positive: the clock is ahead)."""
    error_s: float | None = None
    """Bound or estimate of the clock's error against the reference."""
    server: str | None = None


def run_command(argv: list[str]) -> str | None:
    """``argv``'s stdout if it exists and succeeds within COMMAND_TIMEOUT_S, else None."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def read_clock_report(
    run: Run = run_command, kernel: Callable[[], KernelClock | None] = kernel_clock
) -> ClockReport:
    """chrony's view if chronyd runs, else systemd-timesyncd's, else the kernel's."""
    tracking = run(["chronyc", "-n", "tracking"])
    if tracking:
        return parse_chronyc_tracking(tracking)
    timesync_status = run(["timedatectl", "timesync-status"])
    if timesync_status:
        return parse_timedatectl(run(["timedatectl", "show"]) or "", timesync_status)
    state = kernel()
    if state is None:
        return ClockReport("unknown", None)
    return ClockReport("kernel", state.synchronised, error_s=state.esterror_s)


def parse_chronyc_tracking(text: str) -> ClockReport:
    """``chronyc -n tracking``: offset, error bound (offset + dispersion + delay / 2), server."""
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if value
    )
    leap = fields.get("Leap status", "")
    reference = fields.get("Reference ID", "")
    server_match = re.search(r"\((.*)\)", reference)
    server = server_match.group(1) if server_match and server_match.group(1) else None
    synced = leap.lower() != "not synchronised" and not reference.startswith("00000000")
    offset = None
    system = re.match(r"([\d.]+) seconds (fast|slow)", fields.get("System time", ""))
    if system:
        offset = float(system.group(1)) * (1 if system.group(2) == "fast" else -1)
    dispersion = _seconds(fields.get("Root dispersion"))
    delay = _seconds(fields.get("Root delay"))
    error = None
    if offset is not None and dispersion is not None and delay is not None:
        error = abs(offset) + dispersion + delay / 2
    return ClockReport("chrony", synced, offset, error, server)


def parse_timedatectl(show: str, timesync_status: str) -> ClockReport:
    """systemd-timesyncd's ``timedatectl timesync-status``, NTPSynchronized from ``show``."""
    properties = dict(line.partition("=")[::2] for line in show.splitlines() if "=" in line)
    flag = properties.get("NTPSynchronized")
    synced = None if flag is None else flag == "yes"
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in timesync_status.splitlines())
    }
    offset = _timespan(fields.get("Offset"))
    root = _timespan((fields.get("Root distance") or "").split(" ")[0])
    error = abs(offset) + root if offset is not None and root is not None else None
    server = fields.get("Server", "").split(" ")[0] or None
    return ClockReport("timesyncd", synced, offset, error, server)


def _seconds(value: str | None) -> float | None:
    match = re.match(r"([\d.]+) seconds", value or "")
    return float(match.group(1)) if match else None


_SPAN_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def _timespan(value: str | None) -> float | None:
    """systemd's timespans as timesync-status prints them: ``+1.234ms``, ``-567us``, ``2s``."""
    match = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(ns|us|µs|ms|s|min)", (value or "").strip())
    return float(match.group(1)) * _SPAN_UNITS[match.group(2)] if match else None
