"""Stable node ids: Pi CPU serial (as PEPI), else /etc/machine-id, else the host name."""

from __future__ import annotations

import re
import socket
from pathlib import Path


def detect_node_id(
    cpuinfo: Path = Path("/proc/cpuinfo"), machine_id: Path = Path("/etc/machine-id")
) -> str:
    """The first usable of: CPU serial, machine-id, sanitised host name."""
    for candidate in (_cpu_serial(cpuinfo), _machine_id(machine_id), _hostname()):
        if candidate:
            return candidate
    raise RuntimeError("cannot derive a node id: pass --node-id")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cpu_serial(path: Path) -> str | None:
    match = re.search(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", _read_text(path), re.MULTILINE)
    if match is None or not match.group(1).strip("0"):
        return None
    return match.group(1).lower()[-32:]


def _machine_id(path: Path) -> str | None:
    value = _read_text(path).strip().lower()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else None


def _hostname() -> str | None:
    name = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower()).strip("-_")
    return name[:32] or None
