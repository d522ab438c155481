"""One Pi camera streaming on the thread that owns it: frames in; captures, previews out.

The owner thread is the only one that calls the Picamera2 object (picamera2's own model).
It takes every frame the camera delivers, keeps the latest one (the frame a capture
arriving now may want), hands frames to the captures waiting for them and, while someone
watches, a copy of the small lores frame to the preview thread. A capture never sleeps on
this thread: it registers what it wants and waits on its own.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from pepi_fleet.core.mqtt_link import LogThrottle
from pepi_fleet.node.camera.base import CapturedFrame, RGBArray
from pepi_fleet.node.camera.pi_controls import (
    controls_from_metadata,
    frame_duration_us,
    settings_controls,
)
from pepi_fleet.node.camera.pi_preview import PreviewHub
from pepi_fleet.node.camera.pi_sync import NO_SYNC_DETAIL, SYNC_MODE_VALUES, SyncTracker
from pepi_fleet.node.camera.pi_timing import (
    Choice,
    FrameTiming,
    Target,
    choose,
    frame_timing,
    taken_on_arrival,
    target_time,
    wall_minus_monotonic_ns,
)
from pepi_fleet.node.camera.sensors import scaler_crop
from pepi_fleet.schemas.camera import CameraControls, CameraSettings, SyncMode, merge_settings
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import CameraInfo

logger = logging.getLogger(__name__)

MAKE = "Raspberry Pi"
"""EXIF Make of the Pi camera modules (the sensor model comes from libcamera)."""
SMALL_FRAME_PIXELS = 2_200_000
"""Up to about 1080p a stream gets 6 frame buffers, larger ones 4: one is held as the
latest frame, one may be in a capture's hands, one in picamera2's queue, the rest in
flight. Full-resolution BGR buffers are large (37 MB at 4056x3040)."""
LORES_WIDTH = 640
POLL_S = 0.1
"""The owner thread looks at its job queue at least this often while waiting for a frame."""
FRAME_TIMEOUT_S = 5.0
"""A capture fails if no frame settles it this long after its target time."""
CONTROL_TIMEOUT_S = 20.0
"""Opening, reconfiguring or closing a camera may take this long."""
STALL_LOG_S = 5.0
FPS_WINDOW = 30

T = TypeVar("T")


@dataclass(frozen=True)
class StreamSetup:
    """How a camera streams."""

    resolution: tuple[int, int]
    fps: float
    sync: SyncMode = "off"
    sync_frames: int = 100
    """Frames a sync server waits before declaring sync (libcamera's default: 100)."""


@dataclass(frozen=True)
class HeldFrame:
    """A delivered frame that still holds its camera buffer: ``release`` it once read."""

    request: Any
    timing: FrameTiming
    in_sync: bool | None
    controls: CameraControls

    def take(self, camera: int, model: str) -> CapturedFrame:
        """Copy the main stream out, give the buffer back to the camera, describe the frame."""
        try:
            pixels: RGBArray = np.asarray(self.request.make_array("main"), dtype=np.uint8)
            crop = scaler_crop(self.request.get_metadata())  # the sensor area, for EXIF optics
        finally:
            self.request.release()
        if pixels.ndim != 3 or pixels.shape[2] < 3:
            raise CameraError(f"camera {camera} main stream has shape {pixels.shape}, not RGB")
        return CapturedFrame(
            camera=camera,
            timestamp=self.timing.start,
            pixels=np.ascontiguousarray(pixels[:, :, :3]),
            model=model,
            make=MAKE,
            in_sync=self.in_sync,
            controls=self.controls,
            crop=crop,
        )


@dataclass
class _Waiter:
    target: Target
    future: Future[HeldFrame]
    deadline: float


def lores_size(width: int, height: int) -> tuple[int, int]:
    """The preview stream's size: LORES_WIDTH wide (or less), the main stream's aspect ratio.

    Both sides even, as picamera2 requires; half the height may be odd (1456x1088 gives
    640x478), which the YUV420 conversion handles.
    """
    lores_width = max(2, min(LORES_WIDTH, width) // 2 * 2)
    lores_height = max(2, round(lores_width * height / width / 2) * 2)
    return lores_width, min(lores_height, max(2, height // 2 * 2))


class CameraStream:
    """Camera ``index`` opened with ``open_camera(index)`` (``Picamera2``), streaming."""

    def __init__(
        self,
        index: int,
        open_camera: Callable[[int], Any],
        setup: StreamSetup,
        previews: PreviewHub,
        wall_offset: Callable[[], int] = wall_minus_monotonic_ns,
    ) -> None:
        self.index = index
        self._open_camera = open_camera
        self._setup = setup
        self._previews = previews
        self._wall_offset = wall_offset
        self._cam: Any = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._bad_frames = LogThrottle(60.0)
        # Guards what other threads read or register: waiters, the held frame, the status.
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._held: HeldFrame | None = None
        self._closed = False
        self._applied = CameraSettings()
        self._advertised: frozenset[str] = frozenset()
        self._sync = SyncTracker(setup.sync)
        self._durations: deque[int] = deque(maxlen=FPS_WINDOW)
        self._model = "picamera2"
        self._max_resolution = setup.resolution
        self._resolution = setup.resolution
        self._lores = lores_size(*setup.resolution)
        self._controls: CameraControls | None = None
        self._mode_limits: tuple[int, int] | None = None
        self._last_frame_at = time.monotonic()
        self._pending: Any = None
        """picamera2's job for the next frame (owner thread only)."""
        opened: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(opened,), name=f"picamera2-{index}", daemon=True
        )
        self._thread.start()
        try:
            opened.result(timeout=CONTROL_TIMEOUT_S)
        except TimeoutError as exc:
            self.close()
            raise CameraError(
                f"camera {index} did not start within {CONTROL_TIMEOUT_S:g} s"
            ) from exc

    # -- any thread -----------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self._model

    def info(self) -> CameraInfo:
        """What the status heartbeat says about this camera."""
        with self._lock:
            durations = list(self._durations)
            return CameraInfo(
                index=self.index,
                model=self._model,
                resolution=self._resolution,
                max_resolution=self._max_resolution,
                fps=round(1e6 / statistics.median(durations), 3) if durations else None,
                sync=self._sync.status() if self._setup.sync != "off" else None,
                controls=self._controls,
            )

    def controls(self) -> CameraControls:
        """The values applied to the latest frame (empty before the first frame)."""
        with self._lock:
            return self._controls or CameraControls()

    def request_frame(self, target: Target) -> Future[HeldFrame]:
        """A future for the frame ``target`` settles; its buffer is the caller's to release."""
        future: Future[HeldFrame] = Future()
        with self._lock:
            if self._closed:
                raise CameraError(f"camera {self.index} is closed; restart the node agent")
            held = self._held
            if held is not None and taken_on_arrival(target, held.timing):
                held.request.acquire()
                future.set_result(held)
                return future
            deadline = target_time(target) + FRAME_TIMEOUT_S
            self._waiters.append(_Waiter(target, future, deadline))
        return future

    def abandon(self, future: Future[HeldFrame]) -> None:
        """The caller gave up on ``future``: forget it, and release its frame if it came."""
        with self._lock:
            self._waiters = [w for w in self._waiters if w.future is not future]
        future.add_done_callback(_release_if_delivered)

    def check_settings(self, settings: CameraSettings) -> None:
        """CameraError if this camera cannot take ``settings`` (nothing is changed)."""
        with self._lock:
            applied, advertised = self._applied, self._advertised
        settings_controls(merge_settings(applied, settings), advertised)

    def apply_settings(self, settings: CameraSettings) -> None:
        """Exposure, gain, white balance, focus from ``settings`` (its resolution aside)."""
        self._call(lambda: self._apply(settings.model_copy(update={"resolution": None})))

    def set_resolution(self, width: int, height: int) -> None:
        """Restart the stream at ``width`` x ``height`` (as before if the camera refuses)."""
        setup = dataclasses.replace(self._setup, resolution=(width, height))
        self._call(lambda: self._resize(setup))

    def set_sync(self, mode: SyncMode) -> None:
        """Restart the stream in sync ``mode`` (server or client); sync starts over."""
        setup = dataclasses.replace(self._setup, sync=mode)
        self._call(lambda: self._resize(setup))

    @property
    def sync_mode(self) -> SyncMode:
        """The sync mode this camera was asked for (``info`` says what it got)."""
        with self._lock:
            return self._setup.sync

    def set_fps(self, fps: float) -> None:
        """Ask for a fixed frame rate (within what the sensor mode can do)."""
        self._call(lambda: self._set_fps(fps))

    def close(self) -> None:
        """Stop streaming and release the camera."""
        self._stopping.set()
        self._thread.join(timeout=CONTROL_TIMEOUT_S)

    def _call(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the owner thread between frames and wait for it."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise CameraError(f"camera {self.index} is closed; restart the node agent")
            self._jobs.put((job, future))
        try:
            return future.result(timeout=CONTROL_TIMEOUT_S)
        except TimeoutError as exc:
            raise CameraError(f"camera {self.index} did not respond; restart the node") from exc

    # -- owner thread ---------------------------------------------------------------------------

    def _run(self, opened: Future[None]) -> None:
        try:
            self._cam = self._open_camera(self.index)
            props = self._cam.camera_properties
            self._model = str(props.get("Model", "picamera2"))
            size = props.get("PixelArraySize")
            if size:
                self._max_resolution = (int(size[0]), int(size[1]))
            self._restart(self._setup)
        except Exception as exc:
            opened.set_exception(CameraError(f"camera {self.index} did not start: {exc}"))
            self._shutdown()
            return
        opened.set_result(None)
        try:
            while not self._stopping.is_set():
                self._run_jobs()
                if self._pending is None:
                    self._pending = self._cam.capture_request(wait=False)
                try:
                    request = self._pending.get_result(timeout=POLL_S)
                except TimeoutError:
                    self._on_idle()
                    continue
                except Exception as exc:  # libcamera reports a failed request
                    self._pending = None
                    self._log_bad_frame(f"no frame: {exc}")
                    continue
                self._pending = None
                self._on_frame(request)
        finally:
            self._shutdown()

    def _run_jobs(self) -> None:
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(job())
            except CameraError as exc:
                future.set_exception(exc)
            except Exception as exc:  # picamera2/libcamera errors become ours
                future.set_exception(CameraError(f"camera {self.index}: {exc}"))

    def _restart(self, setup: StreamSetup) -> None:
        """(Re)configure and start streaming at ``setup``; sync and controls re-applied."""
        cam = self._cam
        width, height = setup.resolution
        self._check_fits(setup.resolution)
        self._drop_pending()
        cam.stop()
        self._release_held()
        config = cam.create_video_configuration(
            # BGR888 is [R, G, B] per pixel in numpy: an RGB array with no conversion.
            main={"size": (width, height), "format": "BGR888"},
            lores={"size": lores_size(width, height), "format": "YUV420"},
            buffer_count=6 if width * height <= SMALL_FRAME_PIXELS else 4,
        )
        cam.configure(config)
        advertised = dict(cam.camera_controls)
        limits = advertised.get("FrameDurationLimits")
        mode_limits = (int(limits[0]), int(limits[1])) if limits else None
        sync = self._sync_for(setup.sync, advertised)
        duration = frame_duration_us(setup.fps, mode_limits, frame_lock=sync.enabled)
        controls: dict[str, Any] = {"FrameDurationLimits": (duration, duration)}
        controls |= settings_controls(self._applied, advertised)
        if sync.enabled:
            controls["SyncMode"] = SYNC_MODE_VALUES[sync.mode]
            if sync.mode == "server" and "SyncFrames" in advertised:
                controls["SyncFrames"] = setup.sync_frames
        cam.set_controls(controls)
        cam.start()
        configured = cam.camera_configuration()
        with self._lock:
            self._setup = setup
            self._advertised = frozenset(advertised)
            self._mode_limits = mode_limits
            self._sync = sync
            self._durations.clear()
            self._resolution = tuple(configured["main"]["size"])
            self._lores = tuple(configured["lores"]["size"])
        if abs(duration - 1e6 / setup.fps) > 1:
            logger.warning(
                "camera %d (%s) at %dx%d streams at %.3g fps, not %.3g: %s",
                self.index,
                self._model,
                width,
                height,
                1e6 / duration,
                setup.fps,
                "the sensor mode is not fast enough"
                + (" with headroom for frame sync" if sync.enabled else ""),
            )
        logger.info(
            "camera %d (%s) streaming %dx%d, frame duration %d µs, sync %s",
            self.index,
            self._model,
            width,
            height,
            duration,
            sync.mode,
        )

    def _resize(self, setup: StreamSetup) -> None:
        self._check_fits(setup.resolution)
        previous = self._setup
        try:
            self._restart(setup)
        except Exception:
            self._restart(previous)  # stream as before, then report the refusal
            raise

    def _check_fits(self, resolution: tuple[int, int]) -> None:
        (width, height), (max_w, max_h) = resolution, self._max_resolution
        if width > max_w or height > max_h:
            raise CameraError(
                f"camera {self.index} ({self._model}) is {max_w}x{max_h}; "
                f"{width}x{height} does not fit"
            )

    def _sync_for(self, mode: SyncMode, advertised: dict[str, Any]) -> SyncTracker:
        if mode in ("server", "client") and "SyncMode" not in advertised:
            logger.warning("camera %d: %s", self.index, NO_SYNC_DETAIL)
            return SyncTracker("unsupported", NO_SYNC_DETAIL)
        return SyncTracker(mode)

    def _set_fps(self, fps: float) -> None:
        duration = frame_duration_us(fps, self._mode_limits, frame_lock=self._sync.enabled)
        self._cam.set_controls({"FrameDurationLimits": (duration, duration)})
        with self._lock:
            self._setup = dataclasses.replace(self._setup, fps=fps)
            self._durations.clear()

    def _apply(self, settings: CameraSettings) -> None:
        merged = merge_settings(self._applied, settings)
        self._cam.set_controls(settings_controls(merged, self._advertised))
        with self._lock:
            self._applied = merged

    def _on_frame(self, request: Any) -> None:
        self._last_frame_at = time.monotonic()
        try:
            metadata = request.get_metadata()
            timing = frame_timing(metadata, self._wall_offset())
        except CameraError as exc:
            request.release()
            self._log_bad_frame(str(exc))
            return
        in_sync = self._sync.update(metadata)
        frame = HeldFrame(request, timing, in_sync, controls_from_metadata(metadata, self._applied))
        settled: list[tuple[_Waiter, HeldFrame]] = []
        with self._lock:
            previous = self._held
            for waiter in self._waiters:
                choice = choose(waiter.target, previous.timing if previous else None, timing)
                if choice is not Choice.WAIT:
                    chosen = frame if choice is Choice.CURRENT or previous is None else previous
                    chosen.request.acquire()
                    settled.append((waiter, chosen))
            self._waiters = [w for w in self._waiters if all(w is not s for s, _ in settled)]
            self._held = frame
            self._controls = frame.controls
            if timing.duration_us:
                self._durations.append(timing.duration_us)
        for waiter, chosen in settled:
            waiter.future.set_result(chosen)
        if previous is not None:
            previous.request.release()
        self._expire(time.time())
        if self._previews.wants(self.index):
            try:
                self._previews.feed(self.index, request.make_array("lores"), self._lores)
            except Exception as exc:  # a preview must never stop the stream
                self._log_bad_frame(f"lores frame not copied: {exc}")

    def _on_idle(self) -> None:
        self._expire(time.time())
        if time.monotonic() - self._last_frame_at > STALL_LOG_S:
            self._log_bad_frame(
                f"no frame for {STALL_LOG_S:g} s; check the camera cable and 'dmesg'"
            )

    def _expire(self, now: float) -> None:
        with self._lock:
            late = [w for w in self._waiters if now > w.deadline]
            self._waiters = [w for w in self._waiters if now <= w.deadline]
        for waiter in late:
            waiter.future.set_exception(
                CameraError(
                    f"camera {self.index} gave no frame for {target_time(waiter.target):.3f} "
                    f"within {FRAME_TIMEOUT_S:g} s"
                )
            )

    def _log_bad_frame(self, message: str) -> None:
        held = self._bad_frames.allow()
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            logger.warning("camera %d: %s%s", self.index, message, more)

    def _drop_pending(self) -> None:
        """Withdraw the request for the next frame (before stopping the camera: picamera2
        runs its jobs in order, so a stop would wait behind it)."""
        job, self._pending = self._pending, None
        if job is None:
            return
        self._cam.cancel_all_and_flush()
        try:
            request = job.get_result(timeout=POLL_S)  # it may have got its frame just before
        except Exception:  # cancelled: no frame to give back
            return
        request.release()

    def _release_held(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.request.release()

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        self._release_held()
        for waiter in waiters:
            waiter.future.set_exception(CameraError(f"camera {self.index} closed"))
        while True:
            try:
                _job, future = self._jobs.get_nowait()
            except queue.Empty:
                break
            future.set_exception(CameraError(f"camera {self.index} closed"))
        if self._cam is None:
            return
        try:
            self._drop_pending()
        except Exception:
            logger.warning("camera %d: pending request not withdrawn", self.index, exc_info=True)
        for step in ("stop", "close"):
            try:
                getattr(self._cam, step)()
            except Exception:
                logger.warning("camera %d: %s failed", self.index, step, exc_info=True)


def _release_if_delivered(future: Future[HeldFrame]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().request.release()
