"""Fleet behaviour of scheduled triggers at N = 1000, from the fleet simulator.

``bench/fleet_sim.py`` runs N virtual nodes on the real protocol (the agent's own timing
rule decides arm / late). Immediate triggers first measure each node's delivery latency,
which feeds the controller's estimator (``controller.trigger_lead``); then scheduled
triggers with ``at = now + lead`` count the nodes that received the trigger before ``at``
(armed in time) and those that did not, beside the same count for a lead far too short,
so the count is seen to catch late nodes. The simulator's nodes share a few MQTT
connections: the broker's fan-out to N connections is ``bench/fanout.py``'s measure.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from bench.fleet_sim import FleetSim, start_sim_broker
from bench.report import Summary, fmt_ms, table
from bench.tap import Tap
from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.trigger_lead import LeadEstimator
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus

TOO_SHORT_S = 0.0005
"""A lead below the delivery time on this machine: the count must show late nodes."""


@dataclass(frozen=True)
class Armed:
    lead_name: str
    lead_s: float
    triggers: int
    expected: int
    armed: int
    late: int
    missing: int
    fired: Summary
    """``fired_at - at`` over the nodes armed in time (ms)."""


def _count(name: str, lead_s: float, per_trigger: list[dict[str, CaptureResult]], n: int) -> Armed:
    armed = late = 0
    fired = []
    for results in per_trigger:
        for r in results.values():
            if r.at is None:
                continue
            if r.status is CaptureStatus.OK and r.received_at <= r.at:
                armed += 1
                if r.fired_at is not None:
                    fired.append((r.fired_at - r.at) * 1000)
            else:
                late += 1
    expected = n * len(per_trigger)
    answered = sum(len(r) for r in per_trigger)
    return Armed(
        name,
        lead_s,
        len(per_trigger),
        expected,
        armed,
        late,
        expected - answered,
        Summary.of(fired),
    )


def run(n: int, warmup: int, trials: int) -> tuple[Armed, Armed, float | None]:
    """Measure, then schedule with the estimator's lead and with a too-short one; returns
    both counts and the estimator's latency figure (s)."""
    broker = EmbeddedBroker(root="armed/+", persistence=False)
    start_sim_broker(broker, sim_pw := secrets.token_urlsafe(12))
    root = f"armed/n{n}"
    sim = FleetSim(broker.url, root, n, password=sim_pw, heartbeat_s=30.0)
    tap = Tap(broker.port)
    estimator = LeadEstimator()
    try:
        sim.start(timeout=60)
        for i in range(warmup):
            capture_id = f"warm-{i}"
            sent = time.time()
            tap.trigger(root, capture_id)
            for node_id, r in _wait(sim, capture_id, n).items():
                estimator.add(node_id, r.received_at - sent)  # one host: no clock offset
            time.sleep(0.3)
        estimate = estimator.estimate()
        counts = []
        for name, lead in (("adaptive", estimate.lead_s), ("too short", TOO_SHORT_S)):
            per_trigger = []
            for i in range(trials):
                capture_id = f"{name.replace(' ', '-')}-{i}"
                tap.trigger(root, capture_id, at=time.time() + lead)
                per_trigger.append(_wait(sim, capture_id, n))
                time.sleep(0.3)
            counts.append(_count(name, lead, per_trigger, n))
    finally:
        tap.close()
        sim.stop()
        broker.close()
    return counts[0], counts[1], estimate.latency_s


def _wait(
    sim: FleetSim, capture_id: str, n: int, timeout: float = 30.0
) -> dict[str, CaptureResult]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sim.results_of(capture_id)
        if len(got) >= n:
            return got
        time.sleep(0.02)
    return got


def armed_table(rows: list[Armed]) -> str:
    header = ["lead", "lead s", "triggers", "armed in time", "late", "no answer"]
    header += ["fired-at p50 ms", "p99", "max"]
    body = [
        [r.lead_name, f"{r.lead_s:.4f}", str(r.triggers), f"{r.armed}/{r.expected}"]
        + [str(r.late), str(r.missing)]
        + [fmt_ms(v) for v in (r.fired.p50, r.fired.p99, r.fired.max)]
        for r in rows
    ]
    return table(header, body)
