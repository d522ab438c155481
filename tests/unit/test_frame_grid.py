"""One frame grid: ``pepi capture --align`` lands exactly on the frames of frame-locked nodes."""

from __future__ import annotations

import math
import random

import pytest
from support.clock import ManualClock

from pepi_fleet.core.frame_grid import FrameGrid, align_to_frame_grid, frame_period
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.frame_clock import FrameClock
from pepi_fleet.schemas.capture import CaptureCommand, parse_capture_command

NOW = 1_767_225_600.0  # 2026-01-01, a realistic Unix time where float precision matters
FRAME_RATES = (24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0, 120.0)


def test_frame_grid_aligned_at_is_exactly_a_frame_of_a_frame_locked_node() -> None:
    rng = random.Random(11)
    for fps in FRAME_RATES:
        fake = ManualClock(NOW)
        node = SyntheticCamera(
            "rig-01", resolution=(64, 48), fps=fps, frame_lock=True, clock=fake, sleep=fake.sleep
        )
        clock = node.frame_clock
        for _ in range(300):
            at = NOW + rng.uniform(0.05, 3600.0)
            aligned = align_to_frame_grid(at, fps)
            assert at <= aligned < at + clock.period_s
            # What `pepi capture` publishes is what the node parses, to the last bit.
            command = CaptureCommand(capture_id="scan-1", at=aligned)
            sent = parse_capture_command(command.model_dump_json(exclude_none=True).encode())
            assert sent.at == aligned
            # The node's own grid has a frame starting exactly there, and keeps that frame.
            assert clock.frame_start(clock.frame_index(aligned)) == aligned
            assert clock.frame_for_request(NOW, sent.at) == aligned
        fake.now = NOW
        at = align_to_frame_grid(NOW + 0.5, fps)
        (frame,) = node.capture([0], "scan-2", at)
        assert frame.timestamp == at


def test_frame_grid_aligned_at_is_never_before_the_requested_time() -> None:
    grid = FrameGrid.for_fps(30.0)
    start = grid.frame_start(grid.frame_index(NOW) + 7)
    assert align_to_frame_grid(start, 30.0) == start  # a frame start maps to itself
    just_after = math.nextafter(start, math.inf)
    assert align_to_frame_grid(just_after, 30.0) == grid.frame_start(grid.frame_index(start) + 1)


def test_frame_grid_node_frame_clock_is_the_shared_grid() -> None:
    clock, grid = FrameClock.for_fps(29.97), FrameGrid.for_fps(29.97)
    assert isinstance(clock, FrameGrid)
    assert clock.period_s == grid.period_s == frame_period(29.97)
    for t in (NOW, NOW + 0.0123, NOW + 12.5):
        assert clock.next_frame(t) == grid.next_frame(t) == align_to_frame_grid(t, 29.97)


@pytest.mark.parametrize("fps", [0.0, -30.0, math.nan, math.inf])
def test_frame_grid_rejects_a_frame_rate_that_is_not_positive(fps: float) -> None:
    with pytest.raises(ValueError, match="frame rate"):
        align_to_frame_grid(NOW, fps)
