"""Frame-timing maths: frame boundaries, nearest frames and per-node phases."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pepi_fleet.node.frame_clock import FrameClock, phase_for_node

ROOT = Path(__file__).resolve().parents[2]
PERIOD = 1 / 30
NOW = 1_767_225_600.0  # 2026-01-01, a realistic Unix time where float precision matters


def _on_boundary(clock: FrameClock, t: float) -> bool:
    return clock.frame_start(clock.frame_index(t)) == t


def test_frame_clock_next_frame_is_first_boundary_at_or_after_now() -> None:
    clock = FrameClock(0.1, 0.03)
    start = clock.next_frame(12.345)
    assert start == pytest.approx(12.43)
    assert start >= 12.345
    assert _on_boundary(clock, start)


def test_frame_clock_next_frame_of_a_boundary_is_that_boundary() -> None:
    clock = FrameClock(PERIOD, 0.0)
    k = clock.frame_index(NOW)
    start = clock.frame_start(k)
    assert clock.next_frame(start) == start
    assert clock.frame_index(start) == k


def test_frame_clock_random_times_land_on_boundaries_within_a_period() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        clock = FrameClock(rng.choice([PERIOD, 0.04, 0.1, 1 / 60]), rng.random())
        now = NOW + rng.uniform(0, 86400)
        start = clock.next_frame(now)
        assert now <= start < now + clock.period_s
        assert _on_boundary(clock, start)
        nearest = clock.nearest_frame(now)
        assert abs(nearest - now) <= clock.period_s / 2 + 1e-6
        assert _on_boundary(clock, nearest)
        latest = clock.latest_frame(now)
        assert now - clock.period_s < latest <= now


def test_frame_clock_locked_nodes_share_one_grid() -> None:
    a, b = FrameClock(PERIOD, 0.0), FrameClock(PERIOD, 0.0)
    start = a.next_frame(NOW + 0.0123)
    assert start == b.next_frame(NOW + 0.0123)
    assert start * 30 == pytest.approx(round(start * 30), abs=1e-5)


def test_frame_clock_phase_shifts_the_grid() -> None:
    locked, shifted = FrameClock(0.1, 0.0), FrameClock(0.1, 0.025)
    assert shifted.next_frame(5.0) - locked.next_frame(5.0) == pytest.approx(0.025)


def test_frame_clock_phase_is_normalised_into_one_period() -> None:
    assert FrameClock(0.1, 0.125).phase_s == pytest.approx(0.025)
    assert FrameClock(0.1, -0.025).phase_s == pytest.approx(0.075)


def test_frame_clock_rejects_bad_period() -> None:
    for period in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="frame period"):
            FrameClock(period, 0.0)


def test_frame_clock_request_without_at_waits_for_next_frame() -> None:
    clock = FrameClock(0.1, 0.0)
    assert clock.frame_for_request(10.01, None) == pytest.approx(10.1)


def test_frame_clock_request_just_after_a_frame_keeps_that_buffered_frame() -> None:
    clock = FrameClock(0.1, 0.0)
    assert clock.frame_for_request(10.02, at=10.01) == pytest.approx(10.0)


def test_frame_clock_request_far_in_the_past_gets_the_latest_frame() -> None:
    clock = FrameClock(0.1, 0.0)
    assert clock.frame_for_request(10.02, at=3.0) == pytest.approx(10.0)


def test_frame_clock_request_in_the_future_gets_the_frame_nearest_at() -> None:
    clock = FrameClock(0.1, 0.0)
    assert clock.frame_for_request(10.0, at=12.36) == pytest.approx(12.4)
    assert clock.frame_for_request(10.0, at=12.34) == pytest.approx(12.3)


def test_phase_for_node_is_within_one_period_and_differs_between_nodes() -> None:
    phases = {phase_for_node(f"node-{i}", PERIOD) for i in range(20)}
    assert len(phases) == 20
    assert all(0 <= p < PERIOD for p in phases)
    assert phase_for_node("node-1", PERIOD) == phase_for_node("node-1", PERIOD)


def test_phase_for_node_does_not_depend_on_pythonhashseed() -> None:
    code = "from node_agent.frame_clock import phase_for_node; print(phase_for_node('rig-07', 0.1))"
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout.strip())
    assert outputs == {repr(phase_for_node("rig-07", 0.1))}
