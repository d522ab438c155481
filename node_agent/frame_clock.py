"""Frame-timing maths for streaming cameras: where frames start on the wall clock."""

from __future__ import annotations

import hashlib
import logging
import math

logger = logging.getLogger(__name__)

_EPS = 1e-9
"""Relative slack (in periods) so a time computed as ``k * period`` maps back to frame ``k``."""


def phase_for_node(node_id: str, period_s: float) -> float:
    """A stable phase in ``[0, period_s)`` for an unlocked node, derived from its id.

    Uses SHA-256 rather than ``hash()`` so the phase is the same in every process
    (``hash()`` of a str changes with PYTHONHASHSEED).
    """
    _check_period(period_s)
    digest = hashlib.sha256(node_id.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * period_s


class FrameClock:
    """Frame starts at ``phase_s + k * period_s`` on the wall clock, for integer ``k``.

    Frame-locked nodes use phase 0, so all of them share one grid (``t = k * period``).
    """

    def __init__(self, period_s: float, phase_s: float = 0.0) -> None:
        _check_period(period_s)
        if not math.isfinite(phase_s):
            raise ValueError(f"frame phase must be a finite number, got {phase_s!r}")
        self.period_s = period_s
        self.phase_s = phase_s % period_s

    def __repr__(self) -> str:
        return f"FrameClock(period_s={self.period_s!r}, phase_s={self.phase_s!r})"

    def frame_start(self, index: int) -> float:
        """Wall-clock start of frame ``index``."""
        return self.phase_s + index * self.period_s

    def frame_index(self, t: float) -> int:
        """Index of the frame in progress at ``t`` (a frame's own start maps to itself)."""
        return math.floor((t - self.phase_s) / self.period_s + _EPS)

    def next_frame(self, now: float) -> float:
        """Start of the first frame starting at or after ``now``."""
        k = math.ceil((now - self.phase_s) / self.period_s - _EPS)
        # Float rounding can put k one frame off either way; settle it on exact comparisons.
        if self.frame_start(k) < now:
            k += 1
        elif self.frame_start(k - 1) >= now:
            k -= 1
        return self.frame_start(k)

    def latest_frame(self, now: float) -> float:
        """Start of the most recent frame that started at or before ``now``."""
        start = self.next_frame(now)
        return start if start <= now else self.frame_start(self.frame_index(start) - 1)

    def nearest_frame(self, at: float) -> float:
        """Start of the frame whose start is nearest ``at`` (ties go to the later frame)."""
        return self.frame_start(math.floor((at - self.phase_s) / self.period_s + 0.5))

    def frame_for_request(self, now: float, at: float | None) -> float:
        """The frame a streaming camera delivers for a capture asked for at ``now``.

        ``at`` None: the next frame to start. Otherwise the frame nearest ``at``; if that
        one is already gone from the sensor's one-frame buffer (``at`` well in the past),
        the most recent frame instead, as a real camera would give.
        """
        if at is None:
            return self.next_frame(now)
        return max(self.nearest_frame(at), self.latest_frame(now))


def _check_period(period_s: float) -> None:
    if not (math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"frame period must be a positive number of seconds, got {period_s!r}")
