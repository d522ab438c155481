"""The synthetic camera: frame timing, sharing, chart content and settings."""

from __future__ import annotations

import io
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from support.clock import ManualClock

from pepi_fleet.node.camera.base import Camera
from pepi_fleet.node.camera.synthetic import BAND_ROWS, SyntheticCamera
from pepi_fleet.schemas.errors import CameraError

NOW = 1_767_225_600.0123  # 2026-01-01, just after a 30 fps boundary
SMALL = (320, 240)


def make(
    node_id: str = "node-a", fake: ManualClock | None = None, **kwargs: object
) -> tuple[SyntheticCamera, ManualClock]:
    fake = fake or ManualClock(NOW)
    options: dict[str, object] = {"resolution": SMALL, **kwargs}
    camera = SyntheticCamera(node_id, clock=fake, sleep=fake.sleep, **options)  # type: ignore[arg-type]
    return camera, fake


def test_synthetic_camera_satisfies_the_camera_protocol() -> None:
    camera: Camera = make()[0]
    assert [info.index for info in camera.infos()] == [0]


def test_synthetic_camera_capture_now_waits_for_the_next_frame_boundary() -> None:
    camera, fake = make(frame_lock=True)
    (frame,) = camera.capture([0], "cap-1", None)
    clock = camera.frame_clock
    assert frame.timestamp >= NOW
    assert frame.timestamp - NOW < clock.period_s
    assert clock.frame_start(clock.frame_index(frame.timestamp)) == frame.timestamp
    # It slept until that frame started, like a sensor, and not longer.
    assert fake.now == pytest.approx(frame.timestamp)
    assert len(fake.sleeps) == 1


def test_synthetic_camera_capture_at_returns_frame_within_half_a_period_of_at() -> None:
    camera, fake = make()
    period = camera.frame_clock.period_s
    for offset in (0.5, 0.517, 1.234, 2.0):
        at = fake.now + offset
        (frame,) = camera.capture([0], "cap", at)
        assert abs(frame.timestamp - at) <= period / 2 + 1e-6
        clock = camera.frame_clock
        assert clock.frame_start(clock.frame_index(frame.timestamp)) == frame.timestamp
        assert fake.now == pytest.approx(frame.timestamp)


def test_synthetic_camera_capture_at_just_now_returns_the_buffered_frame_without_waiting() -> None:
    camera, fake = make(frame_lock=True)
    latest = camera.frame_clock.latest_frame(NOW)
    assert latest < NOW  # NOW sits just after a boundary
    (frame,) = camera.capture([0], "cap", NOW)
    assert frame.timestamp == latest
    assert fake.sleeps == []


def test_synthetic_camera_frame_locked_nodes_produce_identical_timestamps() -> None:
    a, _ = make("node-a", frame_lock=True)
    b, _ = make("node-b", frame_lock=True)
    at = NOW + 0.5
    assert a.capture([0], "cap", at)[0].timestamp == b.capture([0], "cap", at)[0].timestamp
    assert a.capture([0], "cap2", None)[0].timestamp == b.capture([0], "cap2", None)[0].timestamp


def test_synthetic_camera_unlocked_nodes_have_their_own_phase() -> None:
    a, _ = make("node-a")
    b, _ = make("node-b")
    at = NOW + 0.5
    ta, tb = a.capture([0], "cap", at)[0].timestamp, b.capture([0], "cap", at)[0].timestamp
    assert ta != tb
    assert abs(ta - tb) < a.frame_clock.period_s


def test_synthetic_camera_explicit_phase_is_used() -> None:
    camera, _ = make(fps=10.0, phase_s=0.025)
    (frame,) = camera.capture([0], "cap", NOW + 1)
    assert (frame.timestamp - 0.025) * 10 == pytest.approx(round((frame.timestamp - 0.025) * 10))


def test_synthetic_camera_cameras_of_one_node_share_the_frame_timestamp() -> None:
    camera, _ = make(count=3)
    frames = camera.capture([0, 1, 2], "cap", None)
    assert [f.camera for f in frames] == [0, 1, 2]
    assert len({f.timestamp for f in frames}) == 1
    # Each camera sees its own view.
    assert not np.array_equal(frames[0].pixels, frames[1].pixels)
    assert all(f.pixels.shape == (240, 320, 3) and f.pixels.dtype == np.uint8 for f in frames)
    assert all(f.model == "synthetic" for f in frames)


def test_synthetic_camera_invalid_camera_index_is_a_clear_error() -> None:
    camera, _ = make(count=2)
    with pytest.raises(CameraError, match=r"camera index 2 does not exist.*0\.\.1"):
        camera.capture([0, 2], "cap", None)
    with pytest.raises(CameraError, match="no cameras"):
        camera.capture([], "cap", None)
    with pytest.raises(CameraError, match="camera index 5"):
        camera.preview_jpeg(5)


def test_synthetic_camera_text_changes_between_captures_and_background_does_not() -> None:
    camera, _ = make()
    first = camera.capture([0], "cap-0001", None)[0].pixels
    second = camera.capture([0], "cap-0002", None)[0].pixels
    # Top-left is the text panel (capture id, time, frame number); bottom-right is chart.
    assert not np.array_equal(first[:120, :200], second[:120, :200])
    assert np.array_equal(first[-60:, -60:], second[-60:, -60:])


def test_synthetic_camera_node_tint_tells_nodes_apart() -> None:
    a = make("node-a")[0].capture([0], "cap", NOW)[0].pixels
    b = make("node-b")[0].capture([0], "cap", NOW)[0].pixels
    mean_a = a[-60:, -60:].reshape(-1, 3).mean(axis=0)
    mean_b = b[-60:, -60:].reshape(-1, 3).mean(axis=0)
    assert np.abs(mean_a - mean_b).max() > 10


def test_synthetic_camera_1080p_jpeg_compresses_like_a_scene_not_noise() -> None:
    camera, _ = make(resolution=(1920, 1080))
    (frame,) = camera.capture([0], "cap", None)
    out = io.BytesIO()
    Image.fromarray(frame.pixels).save(out, format="JPEG", quality=90)
    # Noise would be several MB; a flat image a few tens of KB.
    assert 100_000 < len(out.getvalue()) < 1_500_000


def test_synthetic_camera_12mp_chart_is_built_in_bands_not_full_float_frames() -> None:
    # Deterministic allocation, not time: numpy's allocations are traced (Pillow's image
    # memory is not). A float32 full frame at 12 MP alone would be 148 MB; the whole
    # uint8 frame 37 MB.
    tracemalloc.start()
    try:
        camera = SyntheticCamera("node-a", resolution=(4056, 3040))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000
    (frame,) = camera.capture([0], "cap", None)
    assert frame.pixels.shape == (3040, 4056, 3)
    # The gradients, the zone plate and the grid are all there: not a flat or noisy frame.
    assert len(np.unique(frame.pixels[::16, ::16].reshape(-1, 3), axis=0)) > 1000


def test_synthetic_camera_banded_chart_is_seamless_across_bands() -> None:
    # Rows on either side of a band boundary continue the same smooth gradient.
    camera, _ = make(resolution=(640, 480))
    pixels = camera.capture([0], "cap", None)[0].pixels.astype(int)
    right = pixels[:, -30:-20]  # chart only: right of the text, left of the label's end
    steps = np.abs(np.diff(right, axis=0)).max(axis=(1, 2))
    boundary = steps[BAND_ROWS - 1]
    assert boundary <= np.median(steps) + 2


def test_synthetic_camera_preview_is_a_small_jpeg() -> None:
    camera, _ = make(resolution=(1920, 1080))
    data = camera.preview_jpeg(0, max_width=480)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == (480, 270)


def test_synthetic_camera_preview_is_thread_safe_during_setting_changes() -> None:
    camera, _ = make()

    def preview(i: int) -> bytes:
        if i % 5 == 0:
            camera.set_resolution(320 + i, 240)
            camera.set_fps(10 + i)
        return camera.preview_jpeg(0, max_width=160)

    with ThreadPoolExecutor(4) as pool:
        previews = list(pool.map(preview, range(20)))
    assert all(p.startswith(b"\xff\xd8") for p in previews)


def test_synthetic_camera_set_resolution_changes_frames_and_infos() -> None:
    camera, _ = make()
    camera.set_resolution(640, 480)
    assert camera.capture([0], "cap", None)[0].pixels.shape == (480, 640, 3)
    (info,) = camera.infos()
    assert info.resolution == (640, 480)
    assert info.max_resolution == (4056, 3040)
    assert info.model == "synthetic"
    with pytest.raises(CameraError, match="up to 4056x3040"):
        camera.set_resolution(8000, 6000)


def test_synthetic_camera_set_fps_moves_frames_onto_the_new_grid() -> None:
    camera, _ = make(frame_lock=True)
    camera.set_fps(10.0)
    (frame,) = camera.capture([0], "cap", None)
    assert frame.timestamp * 10 == pytest.approx(round(frame.timestamp * 10))
    assert frame.timestamp - NOW < 0.1
    with pytest.raises(CameraError, match="frame rate"):
        camera.set_fps(0)


def test_synthetic_camera_closed_camera_refuses_captures() -> None:
    camera, _ = make()
    camera.close()
    with pytest.raises(CameraError, match="closed"):
        camera.capture([0], "cap", None)
