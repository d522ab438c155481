"""The folder camera: replay order, frame timing, errors and settings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.clock import ManualClock

from pepi_fleet.node.camera.factory import make_camera
from pepi_fleet.node.camera.folder import FolderCamera
from pepi_fleet.schemas.errors import CameraError

NOW = 1_767_225_600.0123

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    # Names out of creation order, mixed formats and modes, plus a file to ignore.
    Image.new("RGB", (64, 48), GREEN).save(tmp_path / "view_b.png")
    Image.new("RGB", (64, 48), RED).save(tmp_path / "view_a.jpg", quality=95)
    Image.new("RGBA", (64, 48), (*BLUE, 255)).save(tmp_path / "view_c.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def _colour(pixels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in pixels.reshape(-1, 3).mean(axis=0).round())


def test_folder_camera_replays_images_in_name_order_and_cycles(dataset: Path) -> None:
    fake = ManualClock(NOW)
    camera = FolderCamera(dataset, clock=fake, sleep=fake.sleep)
    colours = [_colour(camera.capture([0], f"c{i}", None)[0].pixels) for i in range(4)]
    expected = [RED, GREEN, BLUE, RED]
    for got, want in zip(colours, expected, strict=True):
        assert np.abs(np.subtract(got, want)).max() <= 3


def test_folder_camera_returns_rgb_uint8_pixels(dataset: Path) -> None:
    fake = ManualClock(NOW)
    camera = FolderCamera(dataset, clock=fake, sleep=fake.sleep)
    for _ in range(3):
        (frame,) = camera.capture([0], "cap", None)
        assert frame.pixels.shape == (48, 64, 3)
        assert frame.pixels.dtype == np.uint8
        assert frame.model == "folder"


def test_folder_camera_frames_sit_on_the_frame_grid(dataset: Path) -> None:
    fake = ManualClock(NOW)
    camera = FolderCamera(dataset, fps=10.0, clock=fake, sleep=fake.sleep)
    (frame,) = camera.capture([0], "cap", None)
    assert frame.timestamp == pytest.approx(NOW - 0.0123 + 0.1)
    assert fake.now == pytest.approx(frame.timestamp)
    at = NOW + 0.87
    (frame,) = camera.capture([0], "cap", at)
    assert abs(frame.timestamp - at) <= 0.05 + 1e-6
    assert frame.timestamp * 10 == pytest.approx(round(frame.timestamp * 10))


@pytest.mark.parametrize("fps", [0.0, float("nan"), 1e6])
def test_folder_camera_refuses_a_frame_rate_out_of_range(dataset: Path, fps: float) -> None:
    with pytest.raises(CameraError, match="frame rate must be between"):
        FolderCamera(dataset, fps=fps)
    camera = FolderCamera(dataset, fps=10.0)
    with pytest.raises(CameraError, match="frame rate must be between"):
        camera.set_fps(fps)


def test_folder_camera_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(CameraError, match=r"has no \.jpg, \.jpeg or \.png images"):
        FolderCamera(tmp_path)


def test_folder_camera_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="is not a directory"):
        FolderCamera(tmp_path / "nope")


def test_folder_camera_has_only_camera_zero(dataset: Path) -> None:
    camera = FolderCamera(dataset)
    (info,) = camera.infos()
    assert (info.index, info.model, info.resolution) == (0, "folder", (64, 48))
    with pytest.raises(CameraError, match="camera index 1 does not exist"):
        camera.capture([1], "cap", None)


def test_folder_camera_preview_is_a_scaled_jpeg_of_the_next_image(dataset: Path) -> None:
    camera = FolderCamera(dataset)
    with Image.open(io.BytesIO(camera.preview_jpeg(0, max_width=32))) as image:
        assert image.format == "JPEG"
        assert image.size == (32, 24)
        assert np.abs(np.subtract(_colour(np.asarray(image)), RED)).max() <= 6


def test_folder_camera_set_resolution_scales_frames(dataset: Path) -> None:
    fake = ManualClock(NOW)
    camera = FolderCamera(dataset, clock=fake, sleep=fake.sleep)
    camera.set_resolution(32, 24)
    assert camera.capture([0], "cap", None)[0].pixels.shape == (24, 32, 3)
    with pytest.raises(CameraError, match="up to 64x48"):
        camera.set_resolution(128, 96)


def test_folder_camera_factory_needs_a_folder(dataset: Path) -> None:
    with pytest.raises(CameraError, match="needs a folder"):
        make_camera("folder", node_id="n1", resolution=(64, 48), fps=30.0, folder=None)
    with pytest.raises(CameraError, match="folder was given"):
        make_camera("synthetic", node_id="n1", resolution=(64, 48), fps=30.0, folder=dataset)
    camera = make_camera("folder", node_id="n1", resolution=(64, 48), fps=30.0, folder=dataset)
    assert camera.infos()[0].model == "folder"


def test_folder_camera_factory_frame_lock_uses_the_shared_grid(dataset: Path) -> None:
    camera = make_camera(
        "folder", node_id="n1", resolution=(64, 48), fps=10.0, frame_lock=True, folder=dataset
    )
    # An ``at`` long past gets the latest frame at once: no waiting on the real clock.
    (frame,) = camera.capture([0], "cap", 1_000.0)
    assert frame.timestamp * 10 == pytest.approx(round(frame.timestamp * 10), abs=1e-4)
