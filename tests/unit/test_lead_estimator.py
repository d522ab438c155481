"""The adaptive lead: per-node latency windows, quantile, margins, floor/ceiling, offsets."""

from __future__ import annotations

import pytest

from pepi_fleet.controller.home_assistant import ControllerState, HomeAssistantBridge
from pepi_fleet.controller.set_quality import assess
from pepi_fleet.controller.trigger_lead import (
    LeadEstimator,
    delivery_latency_s,
    quantile,
)
from pepi_fleet.controller.web.api_models import CaptureRequest
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus
from pepi_fleet.schemas.topics import Topics


def test_quantile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.99) == 99.0
    assert quantile(values, 0.5) == 50.0
    assert quantile([3.0, 1.0, 2.0], 1.0) == 3.0
    assert quantile([7.0], 0.99) == 7.0


def test_lead_unmeasured_is_the_default() -> None:
    est = LeadEstimator(unmeasured_s=1.0).estimate()
    assert est.lead_s == 1.0 and est.latency_s is None and est.nodes_measured == 0


def test_lead_is_slowest_node_quantile_plus_margins() -> None:
    lead = LeadEstimator(margin_ratio=0.5, margin_s=0.05, floor_s=0.0, ceiling_s=10.0)
    for _ in range(10):
        lead.add("fast", 0.010)
        lead.add("slow", 0.200)
    est = lead.estimate()
    assert est.slowest_node == "slow" and est.nodes_measured == 2
    assert est.latency_s is not None
    # bucketed at 5 % resolution, never below the exact value
    assert 0.200 <= est.latency_s <= 0.200 * 1.05
    assert est.lead_s == pytest.approx(est.latency_s * 1.5 + 0.05)
    assert lead.node_latency_s("fast") == 0.010


def test_lead_floor_and_ceiling() -> None:
    lead = LeadEstimator(floor_s=0.25, ceiling_s=2.0)
    lead.add("n1", 0.001)
    assert lead.estimate().lead_s == 0.25
    lead.add("n2", 30.0)
    assert lead.estimate().lead_s == 2.0


def test_window_forgets_old_samples() -> None:
    lead = LeadEstimator(window=4, q=1.0, floor_s=0.0)
    lead.add("n1", 1.0)
    for _ in range(3):
        lead.add("n1", 0.01)
    assert lead.node_latency_s("n1") == 1.0
    lead.add("n1", 0.01)  # the 1 s sample falls out of the window of four
    assert lead.node_latency_s("n1") == 0.01
    latency = lead.estimate().latency_s
    assert latency is not None and latency < 0.011


def test_quantile_ignores_a_rare_spike_in_a_full_window() -> None:
    lead = LeadEstimator(window=200, q=0.99, floor_s=0.0)
    for i in range(200):
        lead.add("n1", 2.0 if i == 50 else 0.02)
    assert lead.node_latency_s("n1") == 0.02


def test_drop_removes_a_node_from_the_fleet_figure() -> None:
    lead = LeadEstimator(floor_s=0.0)
    lead.add("fast", 0.01)
    lead.add("slow", 1.0)
    lead.drop("slow")
    est = lead.estimate()
    assert est.slowest_node == "fast" and est.nodes_measured == 1
    lead.drop("fast")
    lead.drop("never-seen")
    assert lead.estimate().latency_s is None


def test_fleet_of_a_thousand_nodes() -> None:
    lead = LeadEstimator(floor_s=0.0)
    for i in range(1000):
        lead.add(f"n{i}", 0.001 * (i % 10) + 0.005)
    lead.add("n7", 0.5)
    est = lead.estimate()
    assert est.nodes_measured == 1000 and est.slowest_node == "n7"


def test_negative_latency_counts_as_zero_and_nan_is_refused() -> None:
    lead = LeadEstimator()
    lead.add("n1", -0.003)  # offset estimate residue
    assert lead.node_latency_s("n1") == 0.0
    with pytest.raises(ValueError, match="finite"):
        lead.add("n1", float("nan"))


def test_delivery_latency_removes_the_node_clock_offset() -> None:
    # node clock 2 s ahead of the controller's; sent at 100.000, received 12 ms later
    assert delivery_latency_s(100.0, 102.012, 2.0) == pytest.approx(0.012)
    # node clock 0.5 s behind
    assert delivery_latency_s(100.0, 99.52, -0.5) == pytest.approx(0.02)


def _result(
    node: str, status: CaptureStatus, received_at: float, fired: float | None
) -> CaptureResult:
    return CaptureResult(
        node_id=node,
        capture_id="s1",
        status=status,
        received_at=received_at,
        fired_at=fired,
        at=10.0,
    )


def test_assess_names_nodes_that_armed_after_at() -> None:
    results = {
        "early": _result("early", CaptureStatus.OK, 9.5, 10.0),
        "behind": _result("behind", CaptureStatus.OK, 10.02, 10.02),  # fired on receipt
        "refused": _result("refused", CaptureStatus.LATE, 11.0, None),
    }
    verdict = assess(["early", "behind", "refused"], results, at=10.0)
    assert verdict.late == ["behind", "refused"]
    assert assess(["early"], {"early": results["early"]}, at=None).late == []


def test_capture_request_delay_auto() -> None:
    auto = CaptureRequest.model_validate({"delay": "auto"})
    assert auto.fire_at(100.0, 0.4) == pytest.approx(100.4)
    assert CaptureRequest.model_validate({"delay": 2.0}).fire_at(100.0, 0.4) == 102.0
    assert CaptureRequest().fire_at(100.0, 0.4) is None
    with pytest.raises(ValueError, match="auto"):
        CaptureRequest.model_validate({"delay": "soon"})
    with pytest.raises(ValueError, match="not both"):
        CaptureRequest.model_validate({"delay": "auto", "at": 5.0})


def test_controller_state_carries_the_lead_with_discovery_off() -> None:
    published: list[tuple[str, bytes | str, bool]] = []
    bridge = HomeAssistantBridge(
        Topics("pepi/v1"),
        lambda topic, payload, retain: published.append((topic, payload, retain)),
        "1.0",
        None,
        lambda: 100.0,
        enabled=False,
    )
    lead = LeadEstimator(floor_s=0.0, margin_ratio=0.0, margin_s=0.0)
    lead.add("n1", 0.2)
    bridge.update_lead(lead.estimate())
    bridge.flush(force=True)
    assert [(t, r) for t, _, r in published] == [("pepi/v1/controller/state", True)]
    state = ControllerState.model_validate_json(published[0][1])
    assert state.trigger_lead_s is not None and 0.2 <= state.trigger_lead_s <= 0.21
    assert state.trigger_latency_s == state.trigger_lead_s
