"""The folder camera: replays a directory of images (e.g. a real multi-view dataset)."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pepi_fleet.node.camera.base import CapturedFrame, check_fps
from pepi_fleet.node.frame_clock import FrameClock
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import CameraInfo

logger = logging.getLogger(__name__)

MODEL = "folder"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


class FolderCamera:
    """One camera (index 0) whose frames are the folder's images in name order, cycling.

    Each capture takes the next image; timestamps sit on a FrameClock grid like a sensor's.
    """

    def __init__(
        self,
        folder: Path,
        fps: float = 30.0,
        *,
        phase_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not folder.is_dir():
            raise CameraError(
                f"folder camera: {folder} is not a directory; give a folder of images"
            )
        self._files = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not self._files:
            raise CameraError(f"folder camera: {folder} has no .jpg, .jpeg or .png images")
        self._phase_s = phase_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0
        with Image.open(self._files[0]) as first:
            self._native: tuple[int, int] = first.size
        self._resolution = self._native
        self._frame_clock = self._make_frame_clock(fps)
        logger.info("folder camera: %d images from %s", len(self._files), folder)

    def infos(self) -> list[CameraInfo]:
        """The single camera; its maximum is the first image's size."""
        with self._lock:
            resolution = self._resolution
        return [
            CameraInfo(index=0, model=MODEL, resolution=resolution, max_resolution=self._native)
        ]

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        """The next image of the folder, timed like the synthetic camera's frames."""
        _check_cameras(cameras)
        with self._lock:
            frame_clock = self._frame_clock
            resolution = self._resolution
            path = self._files[self._next]
            self._next = (self._next + 1) % len(self._files)
        now = self._clock()
        start = frame_clock.frame_for_request(now, at)
        if start > now:
            self._sleep(start - now)
        pixels = np.asarray(_load(path, resolution))
        return [
            CapturedFrame(camera=cam, timestamp=start, pixels=pixels, model=MODEL)
            for cam in cameras
        ]

    def preview_jpeg(self, camera: int, max_width: int = 640) -> bytes:
        """A small JPEG of the image the next capture will return."""
        _check_cameras([camera])
        if max_width < 1:
            raise CameraError(f"preview width must be at least 1 pixel, got {max_width}")
        with self._lock:
            path = self._files[self._next]
        try:
            with Image.open(path) as image:
                # draft() lets the JPEG decoder scale down while decoding: much faster.
                image.draft("RGB", (max_width, max_width))
                preview = image.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise CameraError(f"folder camera: cannot read {path.name}: {exc}") from exc
        preview.thumbnail((max_width, preview.height))
        out = io.BytesIO()
        preview.save(out, format="JPEG", quality=80)
        return out.getvalue()

    def set_resolution(self, width: int, height: int) -> None:
        """Scale replayed images to ``width`` x ``height`` (no larger than the first image)."""
        max_w, max_h = self._native
        if not (0 < width <= max_w and 0 < height <= max_h):
            raise CameraError(
                f"resolution {width}x{height} is not supported by the folder camera; "
                f"use up to {max_w}x{max_h}"
            )
        with self._lock:
            self._resolution = (width, height)

    def set_fps(self, fps: float) -> None:
        """Change the frame rate of the replay's frame grid."""
        frame_clock = self._make_frame_clock(fps)
        with self._lock:
            self._frame_clock = frame_clock

    def close(self) -> None:
        """Nothing to release."""

    def _make_frame_clock(self, fps: float) -> FrameClock:
        return FrameClock.for_fps(check_fps(fps), self._phase_s)


def _check_cameras(cameras: list[int]) -> None:
    if not cameras:
        raise CameraError("no cameras requested; give at least one camera index")
    bad = [c for c in cameras if c != 0]
    if bad:
        raise CameraError(f"camera index {bad[0]} does not exist; the folder camera has camera 0")


def _load(path: Path, resolution: tuple[int, int]) -> Image.Image:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise CameraError(f"folder camera: cannot read {path.name}: {exc}") from exc
    if rgb.size != resolution:
        rgb = rgb.resize(resolution, Image.Resampling.BILINEAR)
    return rgb
