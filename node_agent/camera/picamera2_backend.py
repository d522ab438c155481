"""The Raspberry Pi camera backend (picamera2/libcamera), imported only when chosen.

Each camera (``Picamera2(i)``) streams continuously on the thread that owns it
(``pi_stream``). A scheduled capture keeps the frame whose exposure midpoint is nearest
``at``; an immediate one the first frame whose exposure starts after the call. Previews
come from the lores stream on a thread of their own (``pi_preview``). With ``frame_lock``
the cameras use libcamera's software camera sync (``pi_sync``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Literal

from pepi_fleet.node.camera.base import CapturedFrame, check_fps
from pepi_fleet.node.camera.pi_preview import PreviewHub
from pepi_fleet.node.camera.pi_stream import (
    FRAME_TIMEOUT_S,
    CameraStream,
    HeldFrame,
    StreamSetup,
)
from pepi_fleet.node.camera.pi_sync import SyncRole, camera_modes, resolve_role, sync_server_heard
from pepi_fleet.node.camera.pi_timing import Immediate, Scheduled, Target, target_time
from pepi_fleet.schemas.camera import CameraControls, CameraSettings, SyncMode
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import CameraInfo

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
    "and create the venv with --system-site-packages (deploy/install-pi.sh does both)"
)
DEFAULT_SYNC_FRAMES = 100
"""Frames the sync server waits before frames count as in sync (libcamera's default)."""


class Picamera2Camera:
    """``count`` Pi cameras streaming at ``fps`` (what each sensor mode allows).

    ``frame_lock``: libcamera software camera sync, this node being the rig's sync server or
    a client per ``sync_role`` (``auto``: client if a server is heard, else server).
    """

    def __init__(
        self,
        resolution: tuple[int, int] = (1920, 1080),
        fps: float = 30.0,
        count: int = 1,
        *,
        frame_lock: bool = False,
        sync_role: SyncRole = "auto",
        sync_frames: int = DEFAULT_SYNC_FRAMES,
        server_heard: Callable[[float], bool] = sync_server_heard,
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
        check_fps(fps)
        self.frame_lock = frame_lock
        modes: list[SyncMode] = ["off"] * count
        if frame_lock:
            modes = list(camera_modes(resolve_role(sync_role, server_heard), count))
        self._previews = PreviewHub(count)
        self._streams: list[CameraStream] = []
        try:
            for i in range(count):
                setup = StreamSetup(resolution, fps, modes[i], sync_frames)
                self._streams.append(CameraStream(i, Picamera2, setup, self._previews))
        except CameraError:
            self.close()
            raise

    def infos(self) -> list[CameraInfo]:
        """One entry per camera: model, sizes, delivered frame rate, sync, applied controls."""
        return [stream.info() for stream in self._streams]

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        """One frame per requested camera: nearest ``at``, or the first exposed after now."""
        if not cameras:
            raise CameraError("no cameras requested; give at least one camera index")
        for camera in cameras:
            self._check_index(camera)
        target: Target = Immediate(time.time()) if at is None else Scheduled(at)
        pending: list[tuple[CameraStream, Future[HeldFrame]]] = []
        frames: list[CapturedFrame] = []
        try:
            for camera in cameras:
                stream = self._streams[camera]
                pending.append((stream, stream.request_frame(target)))
            while pending:
                stream, future = pending.pop(0)
                frames.append(_taken(stream, future, target))
        finally:
            for stream, future in pending:
                stream.abandon(future)
        return frames

    def preview_jpeg(self, camera: int, max_width: int = 640) -> bytes:
        """A recent JPEG from the camera's lores stream, at most ``max_width`` wide."""
        self._check_index(camera)
        return self._previews.jpeg(camera, max_width)

    def set_resolution(self, width: int, height: int) -> None:
        """Restart every camera's stream at ``width`` x ``height``."""
        for stream in self._streams:
            stream.set_resolution(width, height)

    def set_fps(self, fps: float) -> None:
        """Ask every camera for ``fps``; ``infos`` reports what each delivers."""
        check_fps(fps)
        for stream in self._streams:
            stream.set_fps(fps)

    def set_sync_role(self, role: Literal["server", "client"]) -> None:
        """Lead the rig's sync (first camera server, the others clients) or follow it.

        Cameras whose mode changes restart their stream: sync starts over on them."""
        if not self.frame_lock:
            raise CameraError("camera sync is off on this node: start it with --frame-lock")
        for stream, mode in zip(self._streams, camera_modes(role, len(self._streams)), strict=True):
            if stream.sync_mode != mode:
                stream.set_sync(mode)
        logger.info("camera sync: this node is now a %s", role)

    def apply_settings(self, settings: CameraSettings) -> None:
        """Apply ``settings`` to every camera; CameraError (nothing changed) if one cannot."""
        for stream in self._streams:
            stream.check_settings(settings)
        if settings.resolution is not None:
            self.set_resolution(*settings.resolution)
        for stream in self._streams:
            stream.apply_settings(settings)

    def read_settings(self) -> list[CameraControls]:
        """Per camera, the exposure, gain, white balance and focus of its latest frame."""
        return [stream.controls() for stream in self._streams]

    def close(self) -> None:
        """Stop and release every camera and the preview thread."""
        for stream in self._streams:
            stream.close()
        self._previews.close()

    def _check_index(self, camera: int) -> None:
        if not 0 <= camera < len(self._streams):
            raise CameraError(
                f"camera index {camera} does not exist; this node has cameras "
                f"0..{len(self._streams) - 1}"
            )


def _taken(stream: CameraStream, future: Future[HeldFrame], target: Target) -> CapturedFrame:
    """Wait for the frame ``future`` brings (the stream fails it past its deadline)."""
    wait = max(0.0, target_time(target) - time.time()) + FRAME_TIMEOUT_S + 2.0
    try:
        held = future.result(timeout=wait)
    except TimeoutError as exc:
        stream.abandon(future)
        raise CameraError(f"camera {stream.index} gave no frame in {wait:.1f} s") from exc
    return held.take(stream.index, stream.model)
