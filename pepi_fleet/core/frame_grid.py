"""The frame grid: where frames start on the wall clock, for the node and ``pepi capture --align``.

Frames start at ``phase + k * period`` for integer ``k``; frame-locked nodes use phase 0, so
they share the grid ``k / fps`` and a capture scheduled on it lands on every node's frame.
"""

from __future__ import annotations

import math
from typing import Self

_EPS = 1e-9
"""Relative slack (in periods) so a time computed as ``k * period`` maps back to frame ``k``."""


def frame_period(fps: float) -> float:
    """Seconds per frame at ``fps``; the one place a frame rate becomes a grid period."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame rate must be a positive number of frames per second, got {fps!r}")
    return 1.0 / fps


def check_period(period_s: float) -> float:
    """``period_s`` if it is a positive number of seconds; ValueError otherwise."""
    if not (math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"frame period must be a positive number of seconds, got {period_s!r}")
    return period_s


class FrameGrid:
    """Frame starts at ``phase_s + k * period_s`` on the wall clock, for integer ``k``.

    Rounding rule (the one both the node and ``--align`` use): a frame start is the float
    ``phase_s + k * period_s`` exactly as ``frame_start`` computes it, and times are compared
    with it exactly. ``next_frame(t)`` is the smallest such value ``>= t``: a time that is a
    frame start maps to itself, and the result is never earlier than ``t``.
    """

    def __init__(self, period_s: float, phase_s: float = 0.0) -> None:
        check_period(period_s)
        if not math.isfinite(phase_s):
            raise ValueError(f"frame phase must be a finite number, got {phase_s!r}")
        self.period_s = period_s
        self.phase_s = phase_s % period_s

    @classmethod
    def for_fps(cls, fps: float, phase_s: float = 0.0) -> Self:
        """The grid of a sensor running at ``fps`` (period ``frame_period(fps)``)."""
        return cls(frame_period(fps), phase_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(period_s={self.period_s!r}, phase_s={self.phase_s!r})"

    def frame_start(self, index: int) -> float:
        """Wall-clock start of frame ``index``."""
        return self.phase_s + index * self.period_s

    def frame_index(self, t: float) -> int:
        """Index of the frame in progress at ``t`` (a frame's own start maps to itself)."""
        return math.floor((t - self.phase_s) / self.period_s + _EPS)

    def next_frame(self, t: float) -> float:
        """Start of the first frame starting at or after ``t`` (see the class's rounding rule)."""
        k = math.ceil((t - self.phase_s) / self.period_s - _EPS)
        # Float rounding can put k one frame off either way; settle it on exact comparisons.
        if self.frame_start(k) < t:
            k += 1
        elif self.frame_start(k - 1) >= t:
            k -= 1
        return self.frame_start(k)

    def nearest_frame(self, t: float) -> float:
        """Start of the frame whose start is nearest ``t`` (ties go to the later frame)."""
        return self.frame_start(math.floor((t - self.phase_s) / self.period_s + 0.5))


def align_to_frame_grid(at: float, fps: float) -> float:
    """The first frame start at or after ``at`` on the grid ``k / fps`` of frame-locked nodes.

    ``FrameGrid.for_fps(fps).next_frame(at)``: the value a frame-locked node at ``fps``
    computes for that frame, bit for bit, so the node keeps exactly that frame.
    """
    return FrameGrid.for_fps(fps).next_frame(at)
