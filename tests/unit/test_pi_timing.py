"""Pi camera frame timing: wall clock from libcamera metadata, and which frame a capture keeps."""

from __future__ import annotations

import pytest

from pepi_fleet.node.camera.pi_timing import (
    Choice,
    FrameTiming,
    Immediate,
    Scheduled,
    choose,
    frame_timing,
    taken_on_arrival,
    wall_minus_monotonic_ns,
)
from pepi_fleet.schemas.errors import CameraError

OFFSET_NS = 1_767_225_000 * 10**9  # wall clock minus monotonic clock
SENSOR_NS = 600 * 10**9 + 250_000_000  # 10 min after boot, + 0.25 s
EXPOSURE_US = 10_000
SENSOR_WALL_S = (SENSOR_NS + OFFSET_NS) / 1e9


def metadata() -> dict[str, object]:
    return {"SensorTimestamp": SENSOR_NS, "ExposureTime": EXPOSURE_US, "FrameDuration": 33_333}


def test_frame_timing_exposure_starts_one_exposure_before_the_sensor_timestamp() -> None:
    timing = frame_timing(metadata(), OFFSET_NS)
    assert timing.start == pytest.approx(SENSOR_WALL_S - 0.010, abs=1e-6)
    assert timing.mid == pytest.approx(SENSOR_WALL_S - 0.005, abs=1e-6)
    assert timing.duration_us == 33_333
    assert timing.source == "SensorTimestamp"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(int(SENSOR_WALL_S * 1e6) + 120, id="microseconds (libcamera <= 0.5.1)"),
        pytest.param(int(SENSOR_WALL_S * 1e9) + 120_000, id="nanoseconds (libcamera >= 0.5.2)"),
    ],
)
def test_frame_timing_uses_frame_wall_clock_in_either_unit(raw: int) -> None:
    timing = frame_timing(metadata() | {"FrameWallClock": raw}, OFFSET_NS)
    assert timing.source == "FrameWallClock"
    # libcamera's fit differs from our mapping by 120 µs here; its value is the one kept
    assert timing.start == pytest.approx(SENSOR_WALL_S + 120e-6 - 0.010, abs=2e-6)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(0, id="0 means unknown"),
        pytest.param(None, id="absent (libcamera before 0.4)"),
        pytest.param(int((SENSOR_WALL_S + 3.0) * 1e6), id="3 s off (fit not settled)"),
        pytest.param(int(SENSOR_WALL_S * 1e3), id="neither µs nor ns"),
    ],
)
def test_frame_timing_falls_back_to_the_sensor_timestamp(raw: int | None) -> None:
    data = metadata() if raw is None else metadata() | {"FrameWallClock": raw}
    timing = frame_timing(data, OFFSET_NS)
    assert timing.source == "SensorTimestamp"
    assert timing.start == pytest.approx(SENSOR_WALL_S - 0.010, abs=1e-6)


def test_frame_timing_without_sensor_timestamp_is_a_camera_error() -> None:
    with pytest.raises(CameraError, match="SensorTimestamp"):
        frame_timing({"ExposureTime": 100}, OFFSET_NS)
    with pytest.raises(CameraError, match="ExposureTime"):
        frame_timing({"SensorTimestamp": SENSOR_NS}, OFFSET_NS)


def test_wall_minus_monotonic_takes_the_tightest_bracket() -> None:
    monotonic = iter([100, 180, 1000, 1010, 2000, 2100])  # brackets of 80, 10, 100 ns
    walls = iter([5_000, 6_000, 7_000])
    offset = wall_minus_monotonic_ns(lambda: next(walls), lambda: next(monotonic))
    assert offset == 6_000 - 1005


def frame(start: float, exposure_us: int = 10_000) -> FrameTiming:
    return FrameTiming(0, exposure_us, start, 33_333, "SensorTimestamp")


PERIOD = 1 / 30


def test_choose_scheduled_waits_until_a_midpoint_passes_at() -> None:
    at = 100.0
    assert choose(Scheduled(at), frame(at - 2 * PERIOD), frame(at - PERIOD)) is Choice.WAIT


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0.010, Choice.PREVIOUS),  # previous mid 5 ms before at, current 23 ms after
        (0.025, Choice.CURRENT),  # previous mid 20 ms before at, current 8 ms after
    ],
)
def test_choose_scheduled_keeps_the_nearest_midpoint(offset: float, expected: Choice) -> None:
    at = 100.0
    previous = frame(at - offset)  # mid = start + 5 ms
    current = frame(at - offset + PERIOD)
    assert choose(Scheduled(at), previous, current) is expected


def test_choose_scheduled_tie_keeps_the_earlier_frame() -> None:
    at = 100.0
    previous = frame(at - PERIOD / 2 - 0.005)
    current = frame(at + PERIOD / 2 - 0.005)
    assert choose(Scheduled(at), previous, current) is Choice.PREVIOUS


def test_choose_scheduled_midpoint_not_start_decides() -> None:
    # A long exposure: the current frame starts before at but its middle is after it.
    at = 100.0
    previous = frame(at - 0.040, exposure_us=30_000)  # mid at - 25 ms
    current = frame(at - 0.010, exposure_us=30_000)  # mid at + 5 ms
    assert choose(Scheduled(at), previous, current) is Choice.CURRENT


def test_choose_immediate_keeps_the_first_frame_exposed_after_receipt() -> None:
    after = 100.0
    assert choose(Immediate(after), None, frame(after - 0.001)) is Choice.WAIT
    assert choose(Immediate(after), frame(after - 0.03), frame(after + 0.002)) is Choice.CURRENT


def test_taken_on_arrival_only_when_the_frame_in_hand_settles_the_target() -> None:
    latest = frame(100.0)
    assert taken_on_arrival(Scheduled(99.0), latest)  # at long gone: nearest that still exists
    assert not taken_on_arrival(Scheduled(100.02), latest)
    assert not taken_on_arrival(Immediate(100.001), latest)
    assert taken_on_arrival(Immediate(99.9), latest)
