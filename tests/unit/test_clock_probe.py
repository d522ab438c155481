"""Clock offset estimates from NTP-style samples, and frame-grid alignment of scheduled captures."""

from __future__ import annotations

import pytest

from pepi_fleet.controller.clock_probe import ClockBook, ProbeRotation
from pepi_fleet.core.frame_grid import align_to_frame_grid
from pepi_fleet.schemas.clock import ClockPong


def pong(t1: float, t2: float, t3: float, seq: int = 1) -> ClockPong:
    return ClockPong(seq=seq, t1=t1, t2=t2, t3=t3)


def test_clock_book_offset_of_a_node_ahead_with_symmetric_delay() -> None:
    book = ClockBook()
    # node 5 ms ahead, 1 ms each way, 0.1 ms to answer
    book.add("cam1", pong(100.0, 100.006, 100.0061), received_at=100.0021)
    est = book.estimate("cam1")
    assert est is not None
    assert est.offset_s == pytest.approx(0.005, abs=1e-9)
    assert est.rtt_s == pytest.approx(0.002, abs=1e-9)
    assert est.uncertainty_s == pytest.approx(0.001, abs=1e-9)


def test_clock_book_keeps_the_sample_with_the_smallest_round_trip() -> None:
    book = ClockBook()
    book.add("cam1", pong(10.0, 10.020, 10.020), received_at=10.030)  # congested: 30 ms
    book.add("cam1", pong(20.0, 20.001, 20.001), received_at=20.002)  # clean: 2 ms
    est = book.estimate("cam1")
    assert est is not None and est.samples == 2
    assert est.rtt_s == pytest.approx(0.002, abs=1e-9)
    assert est.offset_s == pytest.approx(0.0, abs=1e-9)


def test_clock_book_refuses_impossible_samples() -> None:
    book = ClockBook()
    assert book.add("cam1", pong(10.0, 10.0, 10.5), received_at=10.1) is None  # rtt < 0
    assert book.estimate("cam1") is None
    assert book.estimate("unknown") is None


@pytest.mark.parametrize(
    ("at", "fps", "expected"),
    [
        (10.01, 30.0, 10 + 1 / 30),
        (10.0, 30.0, 10.0),
        (100.2, 25.0, 100.2),
        (100.21, 25.0, 100.24),
    ],
)
def test_align_to_frame_grid_rounds_up_to_the_next_frame_start(
    at: float, fps: float, expected: float
) -> None:
    aligned = align_to_frame_grid(at, fps)
    assert aligned == pytest.approx(expected, abs=1e-9)
    assert aligned >= at - 1e-9
    assert (aligned * fps) == pytest.approx(round(aligned * fps), abs=1e-6)


def test_probe_rotation_small_fleet_every_interval() -> None:
    rotation = ProbeRotation(budget_per_s=25.0, interval_s=2.0)
    for node in ("a", "b"):
        rotation.add(node, now=0.0)
    assert rotation.due(1.0, lambda _n: True) == []
    assert sorted(rotation.due(2.0, lambda _n: True)) == ["a", "b"]
    assert rotation.due(3.0, lambda _n: True) == []
    assert sorted(rotation.due(4.0, lambda _n: True)) == ["a", "b"]


def test_probe_rotation_large_fleet_stays_within_the_budget() -> None:
    rotation = ProbeRotation(budget_per_s=25.0, interval_s=2.0)
    nodes = [f"n{i}" for i in range(1000)]
    for node in nodes:
        rotation.add(node, now=0.0)
    assert rotation.period_s == 40.0
    pinged: list[str] = []
    t = 0.0
    while t < 200.0:  # ticks of 0.2 s, as the controller's timer
        t += 0.2
        batch = rotation.due(t, lambda _n: True)
        assert len(batch) <= 25
        pinged += batch
    assert len(pinged) <= 25 * 200 + 25
    assert set(pinged) == set(nodes)  # every node had its turn...
    assert max(pinged.count(n) for n in nodes) <= 200 // 40 + 1  # ...about once a period


def test_probe_rotation_drops_nodes_gone_until_they_come_back() -> None:
    rotation = ProbeRotation(budget_per_s=25.0, interval_s=2.0)
    rotation.add("a", now=0.0)
    assert rotation.due(2.0, lambda _n: False) == []
    assert rotation.due(10.0, lambda _n: True) == []  # not probed while away
    rotation.add("a", now=10.0)
    assert rotation.due(12.0, lambda _n: True) == ["a"]
