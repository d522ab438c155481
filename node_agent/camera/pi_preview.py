"""Preview JPEGs from the Pi cameras' lores streams, made on a thread of their own.

The cameras' owner threads only copy a small YUV frame now and then, and only while
someone watches; conversion and JPEG encoding happen here, so neither a waiting capture
nor a slow encode holds up the other.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from pepi_fleet.node.camera.yuv import yuv420_to_rgb
from pepi_fleet.schemas.errors import CameraError

logger = logging.getLogger(__name__)

PREVIEW_FPS = 10.0
"""At most this many lores frames per second and camera are converted."""
PREVIEW_WANTED_S = 2.0
"""Frames are converted for this long after the last preview request."""
PREVIEW_MAX_AGE_S = 0.5
"""A preview older than this is not served; the caller waits for a fresh one."""
PREVIEW_TIMEOUT_S = 3.0
JPEG_QUALITY = 80


@dataclass(frozen=True)
class _Preview:
    jpeg: bytes
    width: int
    made_at: float


class PreviewHub:
    """Per camera: the latest lores frame in, the latest preview JPEG out."""

    def __init__(self, count: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._wanted_until = [0.0] * count
        self._fed_at = [-1e9] * count
        self._pending: dict[int, tuple[npt.NDArray[np.uint8], tuple[int, int]]] = {}
        self._latest: list[_Preview | None] = [None] * count
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="picamera2-preview", daemon=True)
        self._thread.start()

    def wants(self, camera: int) -> bool:
        """Whether ``camera``'s owner thread should feed its current lores frame."""
        now = self._clock()
        with self._cond:
            return (
                now < self._wanted_until[camera] and now - self._fed_at[camera] >= 1 / PREVIEW_FPS
            )

    def feed(self, camera: int, yuv: npt.NDArray[np.uint8], size: tuple[int, int]) -> None:
        """A copy of ``camera``'s lores YUV420 frame of ``size``; replaces one not yet encoded."""
        with self._cond:
            self._pending[camera] = (yuv, size)
            self._fed_at[camera] = self._clock()
            self._cond.notify_all()

    def jpeg(self, camera: int, max_width: int, timeout: float = PREVIEW_TIMEOUT_S) -> bytes:
        """A preview JPEG no older than PREVIEW_MAX_AGE_S, at most ``max_width`` wide."""
        if max_width < 1:
            raise CameraError(f"preview width must be at least 1 pixel, got {max_width}")
        deadline = self._clock() + timeout
        with self._cond:
            self._wanted_until[camera] = self._clock() + PREVIEW_WANTED_S
            while True:
                if self._closed:
                    raise CameraError("the camera is closed; restart the node agent")
                latest = self._latest[camera]
                now = self._clock()
                if latest is not None and now - latest.made_at <= PREVIEW_MAX_AGE_S:
                    break
                if now >= deadline:
                    raise CameraError(
                        f"camera {camera} sent no preview frame for {timeout:g} s; "
                        "check the node's log and the camera cable"
                    )
                self._cond.wait(deadline - now)
        return latest.jpeg if latest.width <= max_width else _narrower(latest.jpeg, max_width)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                camera = next(iter(self._pending))
                yuv, (width, height) = self._pending.pop(camera)
            try:
                image = yuv420_to_rgb(yuv, width, height)
            except CameraError:
                logger.exception("camera %d: lores frame not converted", camera)
                continue
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=JPEG_QUALITY)
            with self._cond:
                self._latest[camera] = _Preview(out.getvalue(), width, self._clock())
                self._cond.notify_all()


def _narrower(jpeg: bytes, max_width: int) -> bytes:
    image = Image.open(io.BytesIO(jpeg))
    image.thumbnail((max_width, image.height))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
