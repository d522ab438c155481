"""The four trigger modes of the spread bench and the measurement of one trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from thriftpy2.rpc import client_context

from bench.tap import Tap
from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus

MODES = ("pepi", "mqtt-now", "mqtt-at", "mqtt-at-locked")
AT_LEAD_S = 0.3
"""How far ahead a scheduled trigger sets ``at``."""

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Group:
    """One fleet as a trigger target: its topic root, node ids and Thrift endpoints to dial."""

    root: str
    node_ids: list[str]
    thrift: list[Endpoint]


@dataclass(frozen=True)
class Trial:
    """One trigger's outcome; spreads are None unless every node captured."""

    mode: str
    capture_id: str
    fired_ms: float | None
    frame_ms: float | None
    problem: str | None = None
    late_ms: tuple[float, ...] = ()
    """Scheduled modes: each node's ``fired_at - at`` (its own precision, not the spread)."""


class Triggers:
    """Fires one mode at its fleet and measures the spread over the nodes' results."""

    def __init__(
        self, tap: Tap, free: Group, locked: Group, handshake: Callable[[], float]
    ) -> None:
        self.tap = tap
        self.free = free
        self.locked = locked
        self._handshake = handshake

    def group(self, mode: str) -> Group:
        return self.locked if mode == "mqtt-at-locked" else self.free

    def run(self, mode: str, capture_id: str, timeout: float) -> Trial:
        """Trigger, wait for every node's result (or ``timeout``), measure the spreads."""
        group = self.group(mode)
        at = self.fire(mode, capture_id)
        results = self.tap.wait_results(capture_id, len(group.node_ids), timeout)
        return measure(mode, capture_id, group.node_ids, results, at)

    def fire(self, mode: str, capture_id: str) -> float | None:
        """Trigger ``mode``; returns the scheduled ``at`` (None for the immediate modes)."""
        if mode == "pepi":
            pepi_trigger(self.free.thrift, capture_id, self._handshake)
            return None
        if mode == "mqtt-now":
            self.tap.trigger(self.free.root, capture_id)
            return None
        if mode in ("mqtt-at", "mqtt-at-locked"):
            at = time.time() + AT_LEAD_S
            self.tap.trigger(self.group(mode).root, capture_id, at=at)
            return at
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


def pepi_trigger(
    endpoints: list[Endpoint], capture_id: str, handshake: Callable[[], float]
) -> None:
    """PEPI's client: for each node in turn, a new connection and a oneway ``start_capture``.

    ``handshake`` is the TCP connect round trip the delay proxy cannot impose (the kernel
    completes the handshake on its loopback listener), charged here after each connect.
    """
    service = pepi_idl.load().CameraServer
    for host, port in endpoints:
        with client_context(
            service, host, port, socket_timeout=10000, connect_timeout=10000
        ) as client:
            pause = handshake()
            if pause > 0:
                time.sleep(pause)
            client.start_capture(capture_id)


def measure(
    mode: str,
    capture_id: str,
    node_ids: list[str],
    results: dict[str, CaptureResult],
    at: float | None = None,
) -> Trial:
    """max - min of ``fired_at`` and of frame timestamps over all nodes (ms), and with a
    scheduled ``at`` each node's lateness ``fired_at - at`` (ms)."""
    ok = [r for r in results.values() if r.status is CaptureStatus.OK and r.fired_at is not None]
    if len(ok) < len(node_ids):
        missing = sorted(set(node_ids) - set(results))
        bad = sorted(f"{r.node_id}:{r.status}" for r in results.values() if r not in ok)
        problem = f"{len(ok)}/{len(node_ids)} ok; no answer {missing[:5]} bad {bad[:5]}"
        return Trial(mode, capture_id, None, None, problem)
    fired = [r.fired_at for r in ok if r.fired_at is not None]
    frames = [f.timestamp for r in ok for f in r.frames]
    return Trial(
        mode,
        capture_id,
        (max(fired) - min(fired)) * 1000,
        (max(frames) - min(frames)) * 1000 if frames else None,
        late_ms=() if at is None else tuple((f - at) * 1000 for f in fired),
    )
