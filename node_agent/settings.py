"""Camera settings on a node: the fleet's and its own ``NodeSettings``, and metering for a lock.

Runs on the agent's control thread. A payload is applied whole or not at all: a camera
that cannot take a sensor setting, or a resolution larger than a sensor, refuses it before
anything changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pepi_fleet.node.camera.base import AdjustableCamera, Camera
from pepi_fleet.schemas.camera import CameraSettings
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.exposure import MeterReading, MeterRequest
from pepi_fleet.schemas.status import CameraInfo, NodeSettings

logger = logging.getLogger(__name__)

AUTO_EXPOSURE = CameraSettings(exposure_time_us=0, analogue_gain=0, awb_mode="auto")
"""What a metering camera is put on: automatic exposure, gain and white balance."""


class NodeSettingsApplier:
    """Applies ``NodeSettings`` to the camera and the JPEG quality; meters for a lock."""

    def __init__(
        self,
        node_id: str,
        camera: Camera,
        set_jpeg_quality: Callable[[int], None],
        stopped: threading.Event,
    ) -> None:
        self.node_id = node_id
        self.camera = camera
        self._set_jpeg_quality = set_jpeg_quality
        self._stopped = stopped

    def apply(self, settings: NodeSettings) -> None:
        """Apply ``settings``; PepiError (nothing changed) if the camera refuses a value."""
        infos = self.camera.infos()
        _check_resolution(settings, infos)
        if settings.has_camera_settings():
            adjustable = self._adjustable(
                "exposure, gain, white balance or focus",
                "leave out exposure_time_us, analogue_gain, awb_mode, colour_gains, af_mode "
                "and lens_position for this node",
            )
            adjustable.apply_settings(settings.camera_settings())
        self._apply_resolution_and_fps(settings, infos)
        if settings.jpeg_quality is not None:
            self._set_jpeg_quality(settings.jpeg_quality)

    def meter(self, request: MeterRequest) -> MeterReading:
        """Automatic exposure and white balance, ``settle_s`` to settle, then the reading."""
        try:
            camera = self._adjustable("its exposure", "choose a node with a Pi camera")
            count = len(camera.infos())
            if request.camera >= count:
                raise PayloadError(
                    f"camera {request.camera} does not exist on node {self.node_id}; "
                    f"it has cameras 0..{count - 1}"
                )
            camera.apply_settings(AUTO_EXPOSURE)
            if self._stopped.wait(request.settle_s):
                raise PayloadError(f"node {self.node_id} is stopping; meter again")
            controls = camera.read_settings()[request.camera]
        except Exception as exc:  # any failure is the reading's answer, not a dead thread
            logger.error("metering camera %d failed: %s", request.camera, exc)
            return MeterReading(
                request_id=request.request_id,
                node_id=self.node_id,
                camera=request.camera,
                error=f"node {self.node_id}: {exc}"[:500],
            )
        logger.info("camera %d metered: %s", request.camera, controls.model_dump(exclude_none=True))
        return MeterReading(
            request_id=request.request_id,
            node_id=self.node_id,
            camera=request.camera,
            controls=controls,
        )

    def _adjustable(self, what: str, hint: str) -> AdjustableCamera:
        if not isinstance(self.camera, AdjustableCamera):
            model = self.camera.infos()[0].model if self.camera.infos() else "?"
            raise PayloadError(
                f"this node's camera ({model}) cannot set {what}; {hint}; nothing applied"
            )
        return self.camera

    def _apply_resolution_and_fps(self, settings: NodeSettings, infos: list[CameraInfo]) -> None:
        if settings.resolution is not None:
            self.camera.set_resolution(*settings.resolution)
        if settings.fps is None:
            return
        try:
            self.camera.set_fps(settings.fps)
        except Exception:
            if settings.resolution is not None and infos:
                self.camera.set_resolution(*infos[0].resolution)  # all or nothing
            raise


def _check_resolution(settings: NodeSettings, infos: list[CameraInfo]) -> None:
    if settings.resolution is None:
        return
    width, height = settings.resolution
    for info in infos:
        max_w, max_h = info.max_resolution
        if width > max_w or height > max_h:
            raise PayloadError(
                f"resolution {width}x{height} exceeds camera {info.index}'s "
                f"{max_w}x{max_h}; nothing applied"
            )
