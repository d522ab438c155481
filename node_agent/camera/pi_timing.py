"""When a Pi camera frame was exposed, on the wall clock, and which frame a capture keeps.

Conventions (libcamera metadata as picamera2 reads it):

- ``SensorTimestamp``: ns on the kernel's monotonic clock (CLOCK_BOOTTIME per libcamera,
  the same as CLOCK_MONOTONIC on a Pi, which never suspends; picamera2 compares it with
  ``time.monotonic_ns()``). picamera2 takes the exposure start as
  ``SensorTimestamp - 1000 * ExposureTime``; so do we.
- ``ExposureTime``: µs. ``FrameDuration``: µs.
- ``FrameWallClock``: the same instant as ``SensorTimestamp`` on CLOCK_REALTIME, from
  libcamera's linear fit of the two clocks. It is µs in libcamera up to v0.5.1+rpt20250722
  and ns from v0.5.2+rpt20250903; 0 (or absent) means unknown. Its unit is taken from
  whichever reading agrees with the system clock, and a value that agrees with neither
  (a fit not yet settled, a clock step) is not used.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pepi_fleet.schemas.errors import CameraError

WALL_CLOCK_TOLERANCE_S = 0.05
"""How far FrameWallClock may stray from the SensorTimestamp mapping before it is ignored."""

WallSource = Literal["FrameWallClock", "SensorTimestamp"]


@dataclass(frozen=True)
class FrameTiming:
    """One frame's exposure on the wall clock."""

    sensor_ns: int
    """SensorTimestamp as libcamera reported it."""
    exposure_us: int
    start: float
    """Wall clock (Unix s) at which the exposure started."""
    duration_us: int | None
    """FrameDuration: start of this exposure to the start of the next."""
    source: WallSource
    """Where the wall-clock time came from."""

    @property
    def mid(self) -> float:
        """Wall clock (Unix s) of the middle of the exposure."""
        return self.start + self.exposure_us / 2e6


def wall_minus_monotonic_ns(
    wall_ns: Callable[[], int] = time.time_ns, mono_ns: Callable[[], int] = time.monotonic_ns
) -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC now, read between two monotonic readings.

    Taken per frame, it follows every slew and step of the wall clock that chrony or PTP
    makes, like libcamera's own fit; the tightest of three brackets keeps it to a µs or so.
    """
    best: tuple[int, int] | None = None
    for _ in range(3):
        before = mono_ns()
        wall = wall_ns()
        after = mono_ns()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) // 2)
    assert best is not None
    return best[1]


def frame_timing(metadata: Mapping[str, Any], wall_minus_mono_ns: int) -> FrameTiming:
    """The frame's timing from its request metadata; CameraError if it has none."""
    sensor_ns = metadata.get("SensorTimestamp")
    exposure_us = metadata.get("ExposureTime")
    if not isinstance(sensor_ns, int) or sensor_ns <= 0:
        raise CameraError("camera frame carries no SensorTimestamp; is libcamera too old?")
    if not isinstance(exposure_us, (int, float)) or exposure_us < 0:
        raise CameraError("camera frame carries no ExposureTime metadata")
    sensor_wall_s = (sensor_ns + wall_minus_mono_ns) / 1e9
    wall_s, source = _checked_wall_clock(metadata.get("FrameWallClock"), sensor_wall_s)
    duration = metadata.get("FrameDuration")
    return FrameTiming(
        sensor_ns=sensor_ns,
        exposure_us=int(exposure_us),
        start=wall_s - exposure_us / 1e6,
        duration_us=int(duration) if isinstance(duration, (int, float)) and duration > 0 else None,
        source=source,
    )


def _checked_wall_clock(raw: object, sensor_wall_s: float) -> tuple[float, WallSource]:
    """FrameWallClock in s if it is known and agrees with the system clock, else the mapping."""
    if isinstance(raw, (int, float)) and raw > 0:
        for scale in (1e9, 1e6):  # ns (libcamera >= 0.5.2), then µs (0.4.0 - 0.5.1)
            seconds = raw / scale
            if abs(seconds - sensor_wall_s) <= WALL_CLOCK_TOLERANCE_S:
                return seconds, "FrameWallClock"
    return sensor_wall_s, "SensorTimestamp"


# -- which frame a capture keeps ---------------------------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    """Keep the frame whose exposure midpoint is nearest ``at`` (wall clock)."""

    at: float


@dataclass(frozen=True)
class Immediate:
    """Keep the first frame whose exposure starts at or after ``after`` (wall clock)."""

    after: float


Target = Scheduled | Immediate


class Choice(enum.Enum):
    """What to do with the frames in hand."""

    WAIT = "wait"
    PREVIOUS = "previous"
    CURRENT = "current"


def choose(target: Target, previous: FrameTiming | None, current: FrameTiming) -> Choice:
    """Decide on ``current`` (just delivered), ``previous`` being the frame before it.

    A scheduled target is decided by the first frame whose midpoint is at or past ``at``:
    it or the frame before, whichever midpoint is nearer (a tie keeps the earlier one).
    """
    if isinstance(target, Immediate):
        return Choice.CURRENT if current.start >= target.after else Choice.WAIT
    if current.mid < target.at:
        return Choice.WAIT
    if previous is not None and target.at - previous.mid <= current.mid - target.at:
        return Choice.PREVIOUS
    return Choice.CURRENT


def taken_on_arrival(target: Target, latest: FrameTiming) -> bool:
    """Whether the frame already in hand when a capture arrives settles it.

    For ``at`` at or before that frame's midpoint, the frame nearest ``at`` is it or one the
    camera has already recycled; it is the nearest frame there still is.
    """
    if isinstance(target, Immediate):
        return latest.start >= target.after
    return latest.mid >= target.at


def target_time(target: Target) -> float:
    """The wall-clock time a target is about."""
    return target.at if isinstance(target, Scheduled) else target.after
