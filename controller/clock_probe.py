"""NTP-style clock offset and round-trip estimates per node, from clock/ping → clock/pong."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from pepi_fleet.schemas.clock import ClockPong

SAMPLES_KEPT = 16


@dataclass(frozen=True)
class ClockSample:
    """One exchange: t1 controller send, t2 node receive, t3 node send, t4 controller receive."""

    t1: float
    t2: float
    t3: float
    t4: float

    @property
    def offset_s(self) -> float:
        """Node clock minus controller clock (positive: the node is ahead)."""
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def rtt_s(self) -> float:
        """Network round trip, the node's own processing time removed."""
        return (self.t4 - self.t1) - (self.t3 - self.t2)


@dataclass(frozen=True)
class ClockEstimate:
    """Best current estimate for one node: the sample with the smallest round trip."""

    offset_s: float
    rtt_s: float
    uncertainty_s: float
    """Half the best round trip: the offset is exact only if both legs took equally long."""
    samples: int
    measured_at: float


class ClockBook:
    """Keeps the last samples per node and answers the best estimate (thread-safe, pure)."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[ClockSample]] = {}
        self._lock = threading.Lock()

    def add(self, node_id: str, pong: ClockPong, received_at: float) -> ClockSample | None:
        """Record a pong; None if its timestamps are impossible (negative round trip)."""
        sample = ClockSample(pong.t1, pong.t2, pong.t3, received_at)
        if sample.rtt_s < 0 or received_at < pong.t1:
            return None
        with self._lock:
            self._samples.setdefault(node_id, deque(maxlen=SAMPLES_KEPT)).append(sample)
        return sample

    def estimate(self, node_id: str) -> ClockEstimate | None:
        with self._lock:
            samples = list(self._samples.get(node_id, ()))
        if not samples:
            return None
        best = min(samples, key=lambda s: s.rtt_s)
        return ClockEstimate(
            offset_s=best.offset_s,
            rtt_s=best.rtt_s,
            uncertainty_s=best.rtt_s / 2,
            samples=len(samples),
            measured_at=max(s.t4 for s in samples),
        )
