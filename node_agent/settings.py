"""Camera settings on a node: the fleet's and its own ``NodeSettings``, metering for a lock,
and following the controller's camera sync election.

Runs on the agent's control thread. A payload is applied whole or not at all: a camera
that cannot take a sensor setting, or a resolution larger than a sensor, refuses it before
anything changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.node.camera.base import AdjustableCamera, Camera, SyncableCamera
from pepi_fleet.schemas.camera import CameraSettings
from pepi_fleet.schemas.errors import PayloadError, PepiError
from pepi_fleet.schemas.exposure import MeterReading, MeterRequest
from pepi_fleet.schemas.status import CameraInfo, NodeSettings
from pepi_fleet.schemas.sync import SyncServer
from pepi_fleet.schemas.topics import Topics

logger = logging.getLogger(__name__)

MAX_SETTINGS_BYTES = 4096
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
        topics: Topics | None = None,
        publish: Callable[[str, str], object] | None = None,
        changed: Callable[[], None] | None = None,
    ) -> None:
        """``publish(topic, payload)`` sends meter readings; ``changed`` republishes the status
        after the camera changed (both only needed by the ``on_*`` message handlers)."""
        self.node_id = node_id
        self.camera = camera
        self._set_jpeg_quality = set_jpeg_quality
        self._stopped = stopped
        self._topics = topics or Topics()
        self._publish = publish or (lambda topic, payload: None)
        self._changed = changed or (lambda: None)

    # -- messages (control thread) ------------------------------------------------------------

    def on_settings(self, msg: InboundMessage) -> None:
        """Apply all of a settings payload (the fleet's or this node's) or none of it."""
        if not msg.payload and msg.topic == self._topics.fleet_settings():
            logger.info("fleet settings cleared; the cameras keep what they have")
            return
        try:
            settings = decode(NodeSettings, msg.payload, MAX_SETTINGS_BYTES)
        except PayloadError as exc:
            logger.error("bad settings on %s: %s; nothing applied", msg.topic, exc)
            return
        try:
            self.apply(settings)
        except PepiError as exc:
            logger.error("settings on %s not applied: %s", msg.topic, exc)
            return
        except Exception:
            logger.exception("settings on %s failed; the camera may be left as it was", msg.topic)
            return
        logger.info("settings applied: %s", settings.model_dump(exclude_none=True))
        self._changed()

    def on_meter(self, msg: InboundMessage) -> None:
        """Meter for an exposure lock and publish the reading."""
        try:
            request = decode(MeterRequest, msg.payload, MAX_SETTINGS_BYTES)
        except PayloadError as exc:
            logger.error("bad meter request on %s: %s", msg.topic, exc)
            return
        reading = self.meter(request)
        self._publish(self._topics.meter_reading(self.node_id), reading.model_dump_json())
        self._changed()

    def on_sync_election(self, msg: InboundMessage) -> None:
        """Serve the rig's camera sync if the controller elected this node, else follow it."""
        try:
            elected = decode(SyncServer, msg.payload, MAX_SETTINGS_BYTES) if msg.payload else None
        except PayloadError as exc:
            logger.error("bad sync election on %s: %s", msg.topic, exc)
            return
        if not isinstance(self.camera, SyncableCamera):
            return
        server = elected is not None and elected.node_id == self.node_id
        try:
            self.camera.set_sync_role("server" if server else "client")
        except PepiError as exc:
            logger.error("camera sync role not changed: %s", exc)
            return
        self._changed()

    # -- actions ------------------------------------------------------------------------------

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
