"""NTP-style clock offset and round-trip estimates per node, from clock/ping → clock/pong."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
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
        self._estimates: dict[str, ClockEstimate] = {}
        self._lock = threading.Lock()

    def add(self, node_id: str, pong: ClockPong, received_at: float) -> ClockSample | None:
        """Record a pong; None if its timestamps are impossible (negative round trip)."""
        sample = ClockSample(pong.t1, pong.t2, pong.t3, received_at)
        if sample.rtt_s < 0 or received_at < pong.t1:
            return None
        with self._lock:
            samples = self._samples.setdefault(node_id, deque(maxlen=SAMPLES_KEPT))
            samples.append(sample)
            # worked out once per pong, not on every read (a page lists every node's)
            self._estimates[node_id] = _estimate(samples)
        return sample

    def estimate(self, node_id: str) -> ClockEstimate | None:
        with self._lock:
            return self._estimates.get(node_id)


def _estimate(samples: deque[ClockSample]) -> ClockEstimate:
    best = min(samples, key=lambda s: s.rtt_s)
    return ClockEstimate(
        offset_s=best.offset_s,
        rtt_s=best.rtt_s,
        uncertainty_s=best.rtt_s / 2,
        samples=len(samples),
        measured_at=max(s.t4 for s in samples),
    )


PROBE_INTERVAL_S = 2.0
"""A node is probed at most this often (small fleets: every node every 2 s)."""
PROBE_BUDGET_PER_S = 25.0
"""Probes per second for the whole fleet: a larger fleet is probed less often per node
(1000 nodes: each every 40 s), so pongs never grow into most of the controller's traffic."""


class ProbeRotation:
    """Which nodes to ping next: round-robin, each node at most every ``interval_s``, the whole
    fleet within ``budget_per_s`` pings a second. Pure; O(pings) per call, not O(fleet).

    ``add`` a node when it comes online; ``due`` hands out the nodes whose turn has come and
    drops those ``is_online`` says are gone (they are added again when they come back).
    """

    def __init__(
        self,
        budget_per_s: float = PROBE_BUDGET_PER_S,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._budget = budget_per_s
        self._interval = interval_s
        self._turns: deque[tuple[float, str]] = deque()  # (due, node), roughly in due order
        self._members: set[str] = set()
        self._allowance = 0.0
        self._last: float | None = None

    @property
    def period_s(self) -> float:
        """How often each node is probed with the fleet as it is now."""
        return max(self._interval, len(self._members) / self._budget)

    def add(self, node_id: str, now: float) -> None:
        """A node came online (and was just probed): its next turn is a period from now."""
        if node_id not in self._members:
            self._members.add(node_id)
            self._turns.append((now + self.period_s, node_id))

    def due(self, now: float, is_online: Callable[[str], bool]) -> list[str]:
        """The nodes to ping now, within the budget."""
        elapsed = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        self._allowance = min(self._allowance + elapsed * self._budget, self._budget)
        picked: list[str] = []
        while self._turns and self._turns[0][0] <= now and self._allowance >= 1:
            _, node_id = self._turns.popleft()
            if not is_online(node_id):
                self._members.discard(node_id)
                continue
            picked.append(node_id)
            self._allowance -= 1
            self._turns.append((now + self.period_s, node_id))
        return picked
