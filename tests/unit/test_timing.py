"""Fire-or-refuse decisions for capture commands, on injected times."""

from __future__ import annotations

import math

import pytest

from pepi_fleet.node.timing import (
    DEFAULT_LATE_TOLERANCE_S,
    Fire,
    Late,
    Refused,
    decide,
    still_on_time,
)

NOW = 1_763_712_000.0
TOL = 0.5


def _decide(**kwargs: object) -> Fire | Late | Refused:
    args: dict[str, object] = {"at": None, "received_at": NOW, "now": NOW, "late_tolerance_s": TOL}
    args.update(kwargs)
    return decide(**args)  # type: ignore[arg-type]


def test_decide_immediate_fires_now() -> None:
    assert _decide() == Fire(NOW)


def test_decide_immediate_fires_at_evaluation_time_not_receipt() -> None:
    assert _decide(received_at=NOW - 0.2, now=NOW) == Fire(NOW)


@pytest.mark.parametrize("ahead", [0.001, 0.25, 5.0, 3600.0])
def test_decide_future_at_fires_at_at(ahead: float) -> None:
    assert _decide(at=NOW + ahead) == Fire(NOW + ahead)


def test_decide_at_equal_now_fires_now() -> None:
    assert _decide(at=NOW) == Fire(NOW)


@pytest.mark.parametrize("behind", [0.001, 0.2, TOL])
def test_decide_slightly_past_at_within_tolerance_fires_now(behind: float) -> None:
    assert _decide(at=NOW - behind) == Fire(NOW)


@pytest.mark.parametrize("behind", [TOL + 0.001, 2.0, 86400.0])
def test_decide_past_at_beyond_tolerance_is_late(behind: float) -> None:
    decision = _decide(at=NOW - behind)
    assert isinstance(decision, Late)
    assert "tolerance" in decision.reason
    assert f"{TOL}" in decision.reason
    assert f"{behind:.3f}" in decision.reason


def test_decide_tolerance_is_configurable() -> None:
    assert _decide(at=NOW - 2.0, late_tolerance_s=3.0) == Fire(NOW)
    assert isinstance(_decide(at=NOW - 0.2, late_tolerance_s=0.1), Late)


def test_decide_default_tolerance_is_half_a_second() -> None:
    assert DEFAULT_LATE_TOLERANCE_S == 0.5


@pytest.mark.parametrize("at", [None, NOW + 10.0])
def test_decide_expired_message_is_late(at: float | None) -> None:
    decision = _decide(at=at, expires_at=NOW - 1.5)
    assert isinstance(decision, Late)
    assert "expiry" in decision.reason
    assert "1.500" in decision.reason


def test_decide_unexpired_message_fires() -> None:
    assert _decide(expires_at=NOW + 1.0) == Fire(NOW)
    assert _decide(expires_at=NOW) == Fire(NOW)


@pytest.mark.parametrize("at", [None, NOW + 10.0, NOW - 0.1])
def test_decide_retained_trigger_is_late(at: float | None) -> None:
    decision = _decide(at=at, retained=True)
    assert isinstance(decision, Late)
    assert "retained" in decision.reason


def test_still_on_time_passes_a_timely_capture() -> None:
    assert still_on_time(at=None, now=NOW, late_tolerance_s=TOL, expires_at=None) is None
    assert still_on_time(at=NOW - 0.1, now=NOW, late_tolerance_s=TOL, expires_at=NOW + 1) is None


def test_still_on_time_catches_a_command_that_went_stale_while_queued() -> None:
    late = still_on_time(at=NOW, now=NOW + 1.0, late_tolerance_s=TOL, expires_at=None)
    assert isinstance(late, Late)
    assert "tolerance" in late.reason


def test_still_on_time_catches_expiry_while_armed() -> None:
    late = still_on_time(at=NOW + 5, now=NOW + 5, late_tolerance_s=TOL, expires_at=NOW + 1)
    assert isinstance(late, Late)
    assert "expiry" in late.reason


@pytest.mark.parametrize("ahead", [86400.001, 1e9])
def test_decide_at_beyond_the_horizon_is_refused(ahead: float) -> None:
    decision = _decide(at=NOW + ahead, horizon_s=86400.0)
    assert isinstance(decision, Refused)
    assert decision.reason.startswith("at too far ahead")


def test_decide_horizon_is_configurable() -> None:
    assert _decide(at=NOW + 100.0, horizon_s=100.0) == Fire(NOW + 100.0)
    assert isinstance(_decide(at=NOW + 100.5, horizon_s=100.0), Refused)


@pytest.mark.parametrize("at", [math.inf, -math.inf, math.nan])
def test_decide_non_finite_at_is_refused(at: float) -> None:
    decision = _decide(at=at)
    assert isinstance(decision, Refused) and "finite" in decision.reason


def test_decide_retained_clear_is_late_not_an_auto_capture() -> None:
    decision = _decide(retained=True)
    assert isinstance(decision, Late) and "clearing" in decision.reason
