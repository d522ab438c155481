"""Percentile summaries, ratio formatting and the machine description benches print."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """p50 / p99 / max of a sample (linear interpolation between order statistics)."""

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"))
        arr = np.asarray(values, dtype=float)
        return cls(float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(arr.max()))

    def as_dict(self, digits: int = 3) -> dict[str, float | None]:
        """Rounded; an empty sample's NaN becomes None (JSON null, not a bare NaN)."""
        return {
            "p50": _finite(self.p50, digits),
            "p99": _finite(self.p99, digits),
            "max": _finite(self.max, digits),
        }


def _finite(value: float, digits: int) -> float | None:
    return round(value, digits) if np.isfinite(value) else None


def ratio(base: float, value: float) -> float | None:
    """``base / value`` (how many times smaller ``value`` is); None when undefined."""
    if not (np.isfinite(base) and np.isfinite(value)) or value <= 0:
        return None
    return base / value


def fmt_ratio(value: float | None, base: float) -> str:
    """``12.3x``; a zero spread against a positive base prints as ``inf``."""
    if value is not None:
        return f"{value:.1f}x" if value < 1000 else f"{value:.0f}x"
    return "inf" if np.isfinite(base) and base > 0 else "-"


def fmt_value(value: float | int | str | None, digits: int = 1) -> str:
    """A table cell: ``-`` for a figure not measured, floats to ``digits`` places."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ms(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """A plain fixed-width table; columns in ``left`` are left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lefts = {i % len(header) for i in left}

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i in lefts else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, Python and kernel: what the numbers were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    try:
        free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
        mem = next((ln.split()[1] for ln in free.splitlines() if ln.startswith("Mem:")), "?")
    except OSError:
        mem = "?"
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def machine_line() -> str:
    m = machine()
    return (
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Python {m['python']}, "
        f"kernel {m['kernel']}, load average at start {m['load_at_start']}"
    )
