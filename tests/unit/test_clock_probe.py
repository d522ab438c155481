"""Clock offset estimates from NTP-style samples, and frame-grid alignment of scheduled captures."""

from __future__ import annotations

import pytest

from pepi_fleet.controller.clock_probe import ClockBook
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
