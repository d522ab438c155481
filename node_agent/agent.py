"""NodeAgent: wires the MQTT link, capture service, store, Thrift server and MJPEG streams."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pepi_fleet.core.availability import OFFLINE, ONLINE
from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink
from pepi_fleet.node import __version__
from pepi_fleet.node.camera.base import Camera
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService, CaptureSettings
from pepi_fleet.node.clock_sync import clock_synchronised
from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.store import CaptureStore
from pepi_fleet.node.stream import MjpegServer
from pepi_fleet.node.thrift_server import CameraServerHandler, ThriftServer
from pepi_fleet.schemas.capture import (
    CaptureResult,
    CaptureStatus,
    parse_capture_command,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.errors import PayloadError, PepiError
from pepi_fleet.schemas.ids import is_capture_id
from pepi_fleet.schemas.status import ClockInfo, NodeSettings, NodeStatus, ThriftEndpoint
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

MAX_SETTINGS_BYTES = 4096
MAX_PING_BYTES = 1024


class NodeAgent:
    """One Pi's agent. ``start`` brings everything up; ``stop`` publishes ``offline`` and ends."""

    def __init__(
        self,
        config: NodeConfig,
        camera: Camera,
        store: CaptureStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.camera = camera
        self.store = store
        self.topics = Topics(config.topic_root)
        self._clock = clock
        self.stopped = threading.Event()
        self.captures = CaptureService(
            config.node_id,
            camera,
            store,
            self._publish_result,
            self._publish_preview,
            CaptureSettings(config.late_tolerance_s, jpeg_quality=config.jpeg_quality),
            clock,
        )
        self.stream: MjpegServer | None = None
        if config.stream_port >= 0:
            self.stream = MjpegServer(
                camera.preview_jpeg,
                len(camera.infos()),
                config.thrift_host,
                config.stream_port,
                fps=config.stream_fps,
            )
        handler = CameraServerHandler(
            config.node_id,
            store,
            self.captures,
            self.stream_urls,
            allow_shutdown=config.allow_shutdown,
            request_shutdown=self.stopped.set,
        )
        self.thrift = ThriftServer(handler, config.thrift_host, config.thrift_port)
        self.advertise_host = config.advertise_host or _advertise_host(config.thrift_host)
        node = config.node_id
        self.link = MqttLink(
            BrokerAddress.parse(config.broker),
            LinkOptions(
                client_id=node,
                username=config.username or (node if config.password else None),
                password=config.password,
                will_topic=self.topics.availability(node),
                ca_file=str(config.ca_file) if config.ca_file else None,
                subscriptions=(
                    (self.topics.capture(), 1),
                    (self.topics.node_capture(node), 1),
                    (self.topics.settings(node), 1),
                    (self.topics.clock_ping(node), 0),
                ),
            ),
            on_message=self._on_message,
            on_connected=self._on_connected,
        )
        # Settings change the camera and statuses read the disk; keep both off paho's thread.
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control")
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.captures.start()
        self.thrift.start()
        if self.stream is not None:
            self.stream.start()
        self.link.start()
        self._heartbeat.start()
        logger.info(
            "node %s up: thrift %s:%d", self.config.node_id, self.advertise_host, self.thrift.port
        )

    def stop(self) -> None:
        """Clean stop: ``offline`` is published by us (a clean disconnect sends no Will)."""
        self.stopped.set()
        self.captures.stop()
        self.link.stop(final=(self.topics.availability(self.config.node_id), OFFLINE))
        self.thrift.stop()
        if self.stream is not None:
            self.stream.stop()
        self._control.shutdown(wait=True)
        self.camera.close()

    def stream_urls(self) -> list[str]:
        if self.stream is None:
            return []
        base = f"http://{_url_host(self.advertise_host)}:{self.stream.port}"
        return [base + path for path in self.stream.paths()]

    def status(self) -> NodeStatus:
        """The heartbeat payload as of now."""
        return NodeStatus(
            node_id=self.config.node_id,
            sent_at=self._clock(),
            heartbeat_s=self.config.heartbeat_s,
            version=__version__,
            thrift=ThriftEndpoint(host=self.advertise_host, port=self.thrift.port),
            cameras=self.camera.infos(),
            stream_urls=self.stream_urls(),
            store=self.store.info(),
            clock=ClockInfo(synced=clock_synchronised()),
        )

    # -- publishing -----------------------------------------------------------------------------

    def publish_status(self) -> None:
        self.link.publish(
            self.topics.status(self.config.node_id), self.status().model_dump_json(), retain=True
        )

    def _publish_result(self, result: CaptureResult) -> None:
        self.link.publish(self.topics.result(self.config.node_id), result.model_dump_json())
        if result.status in (CaptureStatus.OK, CaptureStatus.STORE_FULL):
            self.publish_status()  # store counts changed

    def _publish_preview(self, jpeg: bytes) -> None:
        self.link.publish(self.topics.preview(self.config.node_id), jpeg, qos=0)

    def _beat(self) -> None:
        while not self.stopped.wait(self.config.heartbeat_s):
            if self.link.connected.is_set():
                self.publish_status()

    # -- paho callbacks (network thread): decode, validate, hand off -----------------------------

    def _on_connected(self) -> None:
        # Subscriptions are already renewed by the link. ``online`` is a queued publish (cheap);
        # building the status reads the store and the kernel clock, so the control thread does it.
        node = self.config.node_id
        self.link.publish(self.topics.availability(node), ONLINE, retain=True)
        self._control.submit(_logged, self.publish_status)

    def _on_message(self, msg: InboundMessage) -> None:
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            logger.warning("message on unexpected topic %s ignored", msg.topic)
            return
        if parsed.kind in (TopicKind.CAPTURE, TopicKind.NODE_CAPTURE):
            self._on_capture(msg)
        elif parsed.kind is TopicKind.SET:
            self._control.submit(_logged, self._apply_settings, msg)
        elif parsed.kind is TopicKind.CLOCK_PING:
            self._on_clock_ping(msg)

    def _on_capture(self, msg: InboundMessage) -> None:
        try:
            command = parse_capture_command(msg.payload)
        except PayloadError as exc:
            self._reject(msg, str(exc))
            return
        self.captures.submit(
            CaptureRequest(
                command=command,
                received_at=msg.received_at,
                source="mqtt",
                expires_at=msg.expires_at,
                retained=msg.retain,
            )
        )

    def _reject(self, msg: InboundMessage, reason: str) -> None:
        capture_id = _salvage_capture_id(msg.payload)
        logger.error("bad capture command on %s: %s", msg.topic, reason)
        self._publish_result(
            CaptureResult(
                node_id=self.config.node_id,
                capture_id=capture_id,
                status=CaptureStatus.ERROR,
                received_at=msg.received_at,
                error=f"{msg.topic}: {reason}",
            )
        )

    def _on_clock_ping(self, msg: InboundMessage) -> None:
        try:
            ping = decode(ClockPing, msg.payload, MAX_PING_BYTES)
        except PayloadError as exc:
            logger.error("bad clock ping on %s: %s", msg.topic, exc)
            return
        # Answered here, not queued: t3 must be taken as close to the send as possible.
        pong = ClockPong(seq=ping.seq, t1=ping.t1, t2=msg.received_at, t3=self._clock())
        self.link.publish(
            self.topics.clock_pong(self.config.node_id), pong.model_dump_json(), qos=0
        )

    def _apply_settings(self, msg: InboundMessage) -> None:
        try:
            settings = decode(NodeSettings, msg.payload, MAX_SETTINGS_BYTES)
        except PayloadError as exc:
            logger.error("bad settings on %s: %s", msg.topic, exc)
            return
        try:
            if settings.resolution is not None:
                self.camera.set_resolution(*settings.resolution)
            if settings.fps is not None:
                self.camera.set_fps(settings.fps)
        except PepiError as exc:
            logger.error("settings on %s not applied: %s", msg.topic, exc)
            return
        if settings.jpeg_quality is not None:
            self.captures.set_jpeg_quality(settings.jpeg_quality)
        logger.info("settings applied: %s", settings.model_dump(exclude_none=True))
        self.publish_status()


def _logged(work: Callable[..., object], *args: object) -> None:
    """Run ``work`` on the control thread; an executor would swallow its exception."""
    try:
        work(*args)
    except Exception:
        logger.exception("%s failed", getattr(work, "__name__", work))


def _salvage_capture_id(payload: bytes) -> str | None:
    """The capture id of a rejected JSON command, when it has a usable one."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("capture_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and is_capture_id(value) else None


def _advertise_host(bind_host: str) -> str:
    if bind_host not in ("0.0.0.0", "::", ""):
        return bind_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
