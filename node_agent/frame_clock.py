"""A streaming sensor's frame clock: the shared frame grid plus its one-frame buffer."""

from __future__ import annotations

import hashlib
import logging

from pepi_fleet.core.frame_grid import FrameGrid, check_period

logger = logging.getLogger(__name__)


def phase_for_node(node_id: str, period_s: float) -> float:
    """A stable phase in ``[0, period_s)`` for an unlocked node, derived from its id.

    Uses SHA-256 rather than ``hash()`` so the phase is the same in every process
    (``hash()`` of a str changes with PYTHONHASHSEED).
    """
    check_period(period_s)
    digest = hashlib.sha256(node_id.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * period_s


class FrameClock(FrameGrid):
    """A sensor's frames on a ``FrameGrid`` (``pepi_fleet.core.frame_grid``), one buffered.

    Frames start at ``phase_s + k * period_s`` on the wall clock. Frame-locked nodes use
    phase 0, so all of them share one grid (``t = k * period``), the grid
    ``pepi capture --align`` rounds to.
    """

    def latest_frame(self, now: float) -> float:
        """Start of the most recent frame that started at or before ``now``."""
        start = self.next_frame(now)
        return start if start <= now else self.frame_start(self.frame_index(start) - 1)

    def frame_for_request(self, now: float, at: float | None) -> float:
        """The frame a streaming camera delivers for a capture asked for at ``now``.

        ``at`` None: the next frame to start. Otherwise the frame nearest ``at``; if that
        one is already gone from the sensor's one-frame buffer (``at`` well in the past),
        the most recent frame instead, as a real camera would give.
        """
        if at is None:
            return self.next_frame(now)
        return max(self.nearest_frame(at), self.latest_frame(now))
