"""The Raspberry Pi camera backend (picamera2/libcamera), imported only when chosen."""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from pepi_fleet.node.camera.base import CapturedFrame, RGBArray
from pepi_fleet.node.camera.sensors import scaler_crop
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import MAX_FPS, MIN_FPS, CameraInfo

logger = logging.getLogger(__name__)

MAKE = "Raspberry Pi"
"""EXIF Make of the Pi camera modules (the sensor model comes from libcamera)."""

INSTALL_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2'"
)
LORES_WIDTH = 640
"""Preview stream width; a multiple of 64 so the YUV420 rows carry no stride padding."""
FRAME_TIMEOUT_S = 5.0
"""How long past the wanted frame time to wait for a frame before giving up."""

T = TypeVar("T")


def frame_wall_clock(metadata: Mapping[str, Any], boot_to_wall_s: float) -> float:
    """A frame's wall-clock time (Unix s) from libcamera request metadata.

    ``FrameWallClock`` (µs, newer libcamera) is used as is; otherwise ``SensorTimestamp``
    (ns on CLOCK_BOOTTIME) is shifted by ``boot_to_wall_s`` = wall clock - boot clock.
    """
    if "FrameWallClock" in metadata:
        return float(metadata["FrameWallClock"]) / 1e6
    if "SensorTimestamp" in metadata:
        return float(metadata["SensorTimestamp"]) / 1e9 + boot_to_wall_s
    raise CameraError("camera frame has neither FrameWallClock nor SensorTimestamp metadata")


def boot_to_wall_offset() -> float:
    """Wall clock minus CLOCK_BOOTTIME, now (follows NTP/PTP corrections of the wall clock)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def yuv420_to_rgb(planar: RGBArray, width: int, height: int) -> Image.Image:
    """An RGB image from picamera2's YUV420 array (``height * 3 / 2`` rows of ``width``)."""
    y = planar[:height, :width]
    u = planar[height : height + height // 4].reshape(height // 2, width // 2)
    v = planar[height + height // 4 : height + height // 2].reshape(height // 2, width // 2)
    size = (width, height)
    planes = [Image.fromarray(np.ascontiguousarray(p), "L").resize(size) for p in (u, v)]
    return Image.merge("YCbCr", (Image.fromarray(np.ascontiguousarray(y), "L"), *planes)).convert(
        "RGB"
    )


class Picamera2Camera:  # pragma: no cover - needs a Raspberry Pi camera
    """``count`` Pi cameras, each owned by its own thread, streaming at ``fps``.

    A capture takes frames from the stream until it has the one nearest ``at`` (or the
    first one starting after the call) and uses that frame's own wall-clock time.
    """

    def __init__(
        self, resolution: tuple[int, int] = (1920, 1080), fps: float = 30.0, count: int = 1
    ) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(INSTALL_HINT) from exc
        available = len(Picamera2.global_camera_info())
        if count < 1 or count > available:
            raise CameraError(
                f"{count} camera(s) asked for but libcamera sees {available}; "
                "check the ribbon cables and 'rpicam-hello --list-cameras'"
            )
        self._fps = _check_fps(fps)
        self._resolution = resolution
        # picamera2 objects are not meant to be shared: each camera lives on one thread.
        self._owners = [ThreadPoolExecutor(1, f"picamera2-{i}") for i in range(count)]
        self._cams: list[Any] = [self._on(i, partial(Picamera2, i)) for i in range(count)]
        for i in range(count):
            self._on(i, partial(self._start, i))

    def infos(self) -> list[CameraInfo]:
        """One entry per camera, with the sensor's model and full size."""
        infos = []
        for i, cam in enumerate(self._cams):
            props = cam.camera_properties
            width, height = props.get("PixelArraySize", self._resolution)
            infos.append(
                CameraInfo(
                    index=i,
                    model=str(props.get("Model", "picamera2")),
                    resolution=self._resolution,
                    max_resolution=(int(width), int(height)),
                )
            )
        return infos

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        """One frame per requested camera, grabbed in parallel on the cameras' threads."""
        if not cameras:
            raise CameraError("no cameras requested; give at least one camera index")
        for cam in cameras:
            self._check_index(cam)
        wanted = time.time() if at is None else at
        futures = [
            (c, self._submit(c, partial(self._grab, c, wanted, at is None))) for c in cameras
        ]
        return [_result(c, f) for c, f in futures]

    def preview_jpeg(self, camera: int, max_width: int = 640) -> bytes:
        """A JPEG from the lores stream, scaled to ``max_width``."""
        self._check_index(camera)

        def grab() -> bytes:
            picam2 = self._cams[camera]
            request = picam2.capture_request()
            try:
                planar = request.make_array("lores")
            finally:
                request.release()
            width, height = picam2.camera_configuration()["lores"]["size"]
            image = yuv420_to_rgb(planar, width, height)
            image.thumbnail((max_width, image.height))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=80)
            return out.getvalue()

        return self._on(camera, grab)

    def set_resolution(self, width: int, height: int) -> None:
        """Reconfigure every camera's main stream to ``width`` x ``height``."""
        self._resolution = (width, height)
        for i in range(len(self._cams)):
            self._on(i, partial(self._start, i))

    def set_fps(self, fps: float) -> None:
        """Fix the frame duration of every camera to ``1 / fps``."""
        self._fps = _check_fps(fps)
        duration = round(1e6 / fps)
        for i, cam in enumerate(self._cams):
            self._on(i, partial(cam.set_controls, {"FrameDurationLimits": (duration, duration)}))

    def close(self) -> None:
        """Stop and release every camera and its thread."""
        for i, cam in enumerate(self._cams):
            try:
                self._on(i, cam.close)
            except CameraError:
                logger.warning("camera %d did not close cleanly", i, exc_info=True)
        for owner in self._owners:
            owner.shutdown(wait=True)

    def _submit(self, camera: int, job: Callable[[], T]) -> Future[T]:
        try:
            return self._owners[camera].submit(job)
        except RuntimeError as exc:  # the executor is shut down
            raise CameraError(f"camera {camera} is closed; restart the node agent") from exc

    def _on(self, camera: int, job: Callable[[], T]) -> T:
        """Run ``job`` on the thread that owns ``camera`` and wait for it."""
        return _result(camera, self._submit(camera, job))

    def _start(self, camera: int) -> None:
        picam2 = self._cams[camera]
        width, height = self._resolution
        lores_height = max(2, round(LORES_WIDTH * height / width / 2) * 2)
        duration = round(1e6 / self._fps)
        # A video configuration keeps the sensor streaming at a fixed rate: every frame has
        # a known start time and a capture only picks one, as the synthetic camera models.
        config = picam2.create_video_configuration(
            main={"size": (width, height), "format": "BGR888"},  # BGR888 is [R, G, B] in numpy
            lores={"size": (LORES_WIDTH, lores_height), "format": "YUV420"},
            controls={"FrameDurationLimits": (duration, duration)},
            buffer_count=4,
        )
        picam2.stop()
        picam2.configure(config)
        picam2.start()
        logger.info("camera %d streaming %dx%d at %.3g fps", camera, width, height, self._fps)

    def _grab(self, camera: int, wanted: float, next_only: bool) -> CapturedFrame:
        """On the owner thread: frames until the one nearest ``wanted`` (or the first after it)."""
        picam2 = self._cams[camera]
        period = 1.0 / self._fps
        lead = wanted - time.time() - 2 * period
        if lead > 0:
            time.sleep(lead)  # nothing to take before then; let the stream run
        previous: tuple[Any, float] | None = None
        try:
            while True:
                request = picam2.capture_request()
                stamp = frame_wall_clock(request.get_metadata(), boot_to_wall_offset())
                if stamp < wanted and time.time() < wanted + FRAME_TIMEOUT_S:
                    if previous is not None:
                        previous[0].release()
                    previous = (request, stamp)  # held: it may turn out to be the nearest
                    continue
                if stamp < wanted:
                    request.release()
                    raise CameraError(f"camera {camera} gave no frame after {wanted:.3f}")
                if not next_only and previous and wanted - previous[1] <= stamp - wanted:
                    chosen, stamp = previous
                    request.release()
                else:
                    chosen = request
                    if previous is not None:
                        previous[0].release()
                previous = None
                try:
                    pixels: RGBArray = np.array(chosen.make_array("main"), dtype=np.uint8)
                    model = str(picam2.camera_properties.get("Model", "picamera2"))
                    crop = scaler_crop(chosen.get_metadata())  # a mode may crop the sensor
                finally:
                    chosen.release()
                return CapturedFrame(
                    camera=camera, timestamp=stamp, pixels=pixels, model=model, make=MAKE, crop=crop
                )
        finally:
            if previous is not None:
                previous[0].release()

    def _check_index(self, camera: int) -> None:
        if not 0 <= camera < len(self._cams):
            raise CameraError(
                f"camera index {camera} does not exist; this node has cameras "
                f"0..{len(self._cams) - 1}"
            )


def _result(camera: int, future: Future[T]) -> T:  # pragma: no cover - needs a camera
    """The job's value; libcamera's own exceptions become CameraError."""
    try:
        return future.result()
    except CameraError:
        raise
    except Exception as exc:
        raise CameraError(f"camera {camera} failed: {exc}") from exc


def _check_fps(fps: float) -> float:
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise CameraError(
            f"frame rate must be between {MIN_FPS:g} and {MAX_FPS:g} fps, got {fps!r}"
        )
    return fps
