"""Adaptive lead time: how far ahead to schedule a capture so every node arms before ``at``.

Pure (no I/O, no clock): the controller feeds it one delivery-latency sample per result
(trigger sent on the controller's clock → received on the node's clock, corrected by the
node's measured clock offset) and asks for the lead. Each node keeps a bounded window of its
latest samples and its own high quantile; the fleet figure is the largest of those (every
node must arm in time, not 99 % of them), found in a histogram of per-node figures with
fixed log-spaced buckets: O(window) per sample, O(buckets) per query, whatever the fleet.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW = 64
"""Samples kept per node: about an hour of captures at one a minute."""
QUANTILE = 0.99
MARGIN_RATIO = 0.5
"""Added on top of the measured latency, as a fraction of it (jitter not seen yet)."""
MARGIN_S = 0.05
"""Added on top of the measured latency (a scheduler's wake-up, a busy node's queue)."""
FLOOR_S = 0.25
"""Never less: a lead under a few frame times gains nothing and risks late nodes."""
CEILING_S = 10.0
"""Never more: one pathological node must not delay every capture by minutes."""
UNMEASURED_S = 1.0
"""The lead before any node's latency is measured (the page's old default delay)."""

_BUCKET_BASE_S = 1e-4
_BUCKET_GROWTH = 1.05  # 5 % resolution: the bucket's upper edge is the value reported
_BUCKETS = int(math.log(CEILING_S * 10 / _BUCKET_BASE_S) / math.log(_BUCKET_GROWTH)) + 2


@dataclass(frozen=True)
class LeadEstimate:
    """The current lead and what it was derived from."""

    lead_s: float
    latency_s: float | None
    """Largest per-node latency quantile (s, bucket resolution); None until measured."""
    nodes_measured: int
    slowest_node: str | None


def delivery_latency_s(sent_at: float, received_at: float, offset_s: float) -> float:
    """Trigger delivery latency: ``sent_at`` on the controller's clock, ``received_at`` on
    the node's, whose offset (node minus controller, from clock probes) is ``offset_s``."""
    return (received_at - offset_s) - sent_at


def _bucket(latency_s: float) -> int:
    if latency_s <= _BUCKET_BASE_S:
        return 0
    index = math.ceil(math.log(latency_s / _BUCKET_BASE_S) / math.log(_BUCKET_GROWTH))
    return min(index, _BUCKETS - 1)


def _bucket_upper_s(index: int) -> float:
    return float(_BUCKET_BASE_S * _BUCKET_GROWTH**index)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty list (``q`` in (0, 1])."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class LeadEstimator:
    """Per-node rolling trigger-delivery latency and the fleet's lead derived from it."""

    def __init__(
        self,
        window: int = WINDOW,
        q: float = QUANTILE,
        margin_ratio: float = MARGIN_RATIO,
        margin_s: float = MARGIN_S,
        floor_s: float = FLOOR_S,
        ceiling_s: float = CEILING_S,
        unmeasured_s: float = UNMEASURED_S,
    ) -> None:
        if not 0 < q <= 1 or window < 1 or not 0 <= floor_s <= ceiling_s:
            raise ValueError("need 0 < q <= 1, window >= 1 and 0 <= floor <= ceiling")
        self._window = window
        self._q = q
        self._margin_ratio = margin_ratio
        self._margin_s = margin_s
        self._floor_s = floor_s
        self._ceiling_s = ceiling_s
        self._unmeasured_s = unmeasured_s
        self._samples: dict[str, deque[float]] = {}
        self._node_bucket: dict[str, int] = {}
        self._histogram = [0] * _BUCKETS  # per-node quantiles, counted by bucket
        self._members: list[set[str]] = [set() for _ in range(_BUCKETS)]

    def add(self, node_id: str, latency_s: float) -> None:
        """One trigger's delivery latency to ``node_id`` (negative clock residue counts as 0)."""
        if not math.isfinite(latency_s):
            raise ValueError(f"latency must be finite, not {latency_s}")
        samples = self._samples.setdefault(node_id, deque(maxlen=self._window))
        samples.append(max(0.0, latency_s))
        self._place(node_id, _bucket(quantile(list(samples), self._q)))

    def drop(self, node_id: str) -> None:
        """Forget a node (it went offline: it is not expected in the next capture)."""
        self._samples.pop(node_id, None)
        self._place(node_id, None)

    def node_latency_s(self, node_id: str) -> float | None:
        """The node's latency quantile over its window (exact, not bucketed)."""
        samples = self._samples.get(node_id)
        return None if not samples else quantile(list(samples), self._q)

    def estimate(self) -> LeadEstimate:
        """The lead to schedule with now: slowest node's quantile plus margins, clamped."""
        for index in range(_BUCKETS - 1, -1, -1):
            if self._histogram[index]:
                latency = _bucket_upper_s(index)
                slowest = next(iter(self._members[index]))  # one of the slowest
                return LeadEstimate(
                    lead_s=self.lead_for(latency),
                    latency_s=latency,
                    nodes_measured=len(self._node_bucket),
                    slowest_node=slowest,
                )
        return LeadEstimate(self._unmeasured_s, None, 0, None)

    def lead_for(self, latency_s: float) -> float:
        """The lead for a fleet whose slowest node takes ``latency_s`` to receive a trigger."""
        lead = latency_s * (1 + self._margin_ratio) + self._margin_s
        return min(max(lead, self._floor_s), self._ceiling_s)

    def _place(self, node_id: str, index: int | None) -> None:
        old = self._node_bucket.pop(node_id, None)
        if old is not None:
            self._histogram[old] -= 1
            self._members[old].discard(node_id)
        if index is not None:
            self._node_bucket[node_id] = index
            self._histogram[index] += 1
            self._members[index].add(node_id)
