"""NodeAgent: wires the MQTT link, capture service, store, Thrift server and MJPEG streams."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable

from pepi_fleet.core.availability import OFFLINE, ONLINE
from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink
from pepi_fleet.node import __version__
from pepi_fleet.node.broker_site import BrokerSite
from pepi_fleet.node.camera.base import Camera, SyncableCamera
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService, CaptureSettings
from pepi_fleet.node.clock_sync import clock_synchronised
from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.health import Health, Vital, Watchdog
from pepi_fleet.node.home_assistant import NodeAnnouncer
from pepi_fleet.node.secret import load_or_create_secret
from pepi_fleet.node.settings import NodeSettingsApplier
from pepi_fleet.node.store import CaptureStore
from pepi_fleet.node.stream import MjpegServer
from pepi_fleet.node.taken_ids import DAY_S, TAKEN_IDS_FILE, TakenIds
from pepi_fleet.node.thrift_server import CameraServerHandler, ThriftServer
from pepi_fleet.node.worker import Progress, Worker
from pepi_fleet.schemas.capture import (
    CaptureResult,
    CaptureStatus,
    is_plain_token,
    parse_capture_command,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import is_capture_id
from pepi_fleet.schemas.nesting import check_nesting
from pepi_fleet.schemas.secret import NodeSecret
from pepi_fleet.schemas.status import ClockInfo, NodeStatus, ThriftEndpoint
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

MAX_PING_BYTES = 1024
MAX_SALVAGE_BYTES = 64 * 1024
"""A rejected command larger than this is not searched for its capture id (paho's thread)."""


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
        self.topics = Topics(config.topic_root, discovery_prefix=config.discovery_prefix)
        self._clock = clock
        self.stopped = threading.Event()
        self.fatal: str | None = None
        """Why the node stopped itself (an essential worker died); None for a normal stop."""
        self.taken = TakenIds(
            config.data_dir / TAKEN_IDS_FILE,
            max_ids=config.remember_ids,
            max_age_s=config.remember_days * DAY_S,
            clock=clock,
        )
        self.captures = CaptureService(
            config.node_id,
            camera,
            store,
            self._publish_result,
            self._publish_preview,
            CaptureSettings(
                config.late_tolerance_s,
                jpeg_quality=config.jpeg_quality,
                horizon_s=config.schedule_horizon_s,
            ),
            clock,
            taken=self.taken,
        )
        self.settings = NodeSettingsApplier(
            config.node_id,
            camera,
            self.captures.set_jpeg_quality,
            self.stopped,
            self.topics,
            lambda topic, payload: self.link.publish(topic, payload),
            lambda: self.publish_status(),
        )
        self.stream: MjpegServer | None = None
        if config.stream_port >= 0:
            self.stream = MjpegServer(
                camera.preview_jpeg,
                len(camera.infos()),
                config.thrift_host,
                config.stream_port,
                fps=config.stream_fps,
                max_clients=config.stream_max_clients,
                client_timeout_s=config.stream_timeout_s,
            )
        self._secret = NodeSecret(secret=load_or_create_secret(config.data_dir))
        handler = CameraServerHandler(
            config.node_id,
            store,
            self.captures,
            self.stream_urls,
            self._secret.secret,
            allow_shutdown=config.allow_shutdown,
            request_shutdown=self.stopped.set,
            pepi_methods=config.thrift_pepi,
        )
        self.thrift = ThriftServer(
            handler,
            config.thrift_host,
            config.thrift_port,
            max_clients=config.thrift_max_clients,
            client_timeout_s=config.thrift_timeout_s,
        )
        self.advertise_host = config.advertise_host or _advertise_host(config.thrift_host)
        node = config.node_id
        self.announcer: NodeAnnouncer | None = None
        if config.discovery:
            self.announcer = NodeAnnouncer(
                self.topics,
                node,
                __version__,
                camera,
                lambda topic, payload, qos, retain: self.link.publish(
                    topic, payload, qos=qos, retain=retain
                ),
                clock,
                config.live_preview_s,
            )
        self._last_capture_at: float | None = max(
            (c.fired_at for c in store.captures()), default=None
        )
        self._syncs = config.frame_lock and isinstance(camera, SyncableCamera)
        """Frame-locked with libcamera camera sync (its role in the status)."""
        self._follows_election = self._syncs and config.sync_role == "elected"
        self.site = BrokerSite(config.site)
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
                    # retained: a node that starts after the fleet was set gets the settings
                    (self.topics.fleet_settings(), 1),
                    (self.topics.settings(node), 1),
                    (self.topics.meter(node), 1),
                    *([(self.topics.sync_server(), 1)] if self._follows_election else []),
                    (self.topics.clock_ping(node), 0),
                    *([(self.announcer.birth_topic, 1)] if self.announcer else []),
                    # a site broker's own bridge state names the site (the central broker's
                    # ACL refuses this subscription: harmless)
                    (self.topics.all_site_bridges(), 1),
                ),
                # so that a retained trigger (or the clearing of one) is seen as retained
                retain_as_published=True,
                role="node",
            ),
            on_message=self._on_message,
            on_connected=self._on_connected,
        )
        # Settings change the camera and statuses read the disk; keep both off paho's thread.
        self._control = Worker("control")
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beating = Progress()
        self.watchdog = Watchdog(
            self.vitals,
            config.watchdog_stall_s,
            on_change=self._on_health_change,
            on_fatal=self._on_fatal,
            notes=self._health_notes,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._control.start()
        self.captures.start()
        self.thrift.start()
        if self.stream is not None:
            self.stream.start()
        self.link.start()
        self._heartbeat.start()
        self.watchdog.start()
        logger.info(
            "node %s up: thrift %s:%d", self.config.node_id, self.advertise_host, self.thrift.port
        )

    def stop(self) -> None:
        """Clean stop: ``offline`` is published by us (a clean disconnect sends no Will).

        After a fatal health verdict the disconnect asks the broker for the Will as well,
        so ``offline`` is out even if our own publish cannot be sent any more.
        """
        self.stopped.set()
        self.watchdog.stop()
        self.captures.stop()
        self.link.stop(
            final=(self.topics.availability(self.config.node_id), OFFLINE),
            will=self.fatal is not None,
        )
        self.thrift.stop()
        if self.stream is not None:
            self.stream.stop()
        self._control.stop(timeout=10)
        self.camera.close()

    # -- health ---------------------------------------------------------------------------------

    def vitals(self) -> list[Vital]:
        """The watchdog's view of every worker the node cannot do without."""
        encoder = self.captures.encoder
        return [
            Vital("mqtt network loop", self.link.loop_alive(), self.link.unacked_s()),
            Vital("capture", self.captures.alive, self.captures.firing.stalled_s()),
            Vital("encoder", encoder.alive, encoder.progress.stalled_s()),
            Vital("control", self._control.alive, self._control.progress.stalled_s()),
            Vital("heartbeat", self._heartbeat.is_alive(), self._beating.stalled_s()),
        ]

    def _health_notes(self) -> tuple[str, ...]:
        warning = self.link.takeover_warning()
        return () if warning is None else (warning,)

    def _on_health_change(self, health: Health) -> None:
        if self.link.connected.is_set():
            self._control.submit(self.publish_status, what="status after a health change")

    def _on_fatal(self, reason: str) -> None:
        self.fatal = reason
        self.stopped.set()

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
            jpeg_quality=self.captures.settings.jpeg_quality,
            sync_role=self.config.sync_role if self._syncs else None,
            health=self.watchdog.health.summary[:500],
            last_capture_at=self._last_capture_at,
            site=self.site.site,
        )

    # -- publishing -----------------------------------------------------------------------------

    def publish_status(self) -> None:
        status = self.status()
        # without a site the payload is what controllers before sites know (extra="forbid")
        payload = status.model_dump_json(exclude={"site"} if status.site is None else None)
        self.link.publish(self.topics.status(self.config.node_id), payload, retain=True)

    def _publish_result(self, result: CaptureResult) -> None:
        self.link.publish(self.topics.result(self.config.node_id), result.model_dump_json())
        if result.status is CaptureStatus.OK and result.fired_at is not None:
            self._last_capture_at = result.fired_at
        if result.status in (CaptureStatus.OK, CaptureStatus.STORE_FULL):
            # store counts changed; the status reads the disk, so not on this thread
            self._control.submit(self.publish_status, what="status after a capture")

    def _publish_preview(self, jpeg: bytes) -> None:
        self.link.publish(self.topics.preview(self.config.node_id), jpeg, qos=0)

    def _beat(self) -> None:
        while not self.stopped.wait(self.config.heartbeat_s):
            if not self.link.connected.is_set():
                continue
            self._beating.begin()
            try:
                self.publish_status()
            except Exception:
                logger.exception(
                    "heartbeat not published; trying again in %s s", self.config.heartbeat_s
                )
            try:
                if self.announcer is not None and self.announcer.live_due():
                    self.announcer.publish_live()
            except Exception:
                logger.exception("live preview for Home Assistant not published")
            finally:
                self._beating.end()

    # -- paho callbacks (network thread): decode, validate, hand off -----------------------------

    def _on_connected(self) -> None:
        # Subscriptions are already renewed by the link. ``online`` is a queued publish (cheap);
        # building the status reads the store and the kernel clock, so the control thread does it.
        node = self.config.node_id
        # before 'online': the controller holds the secret before it fetches anything
        self.link.publish(self.topics.secret(node), self._secret.model_dump_json(), retain=True)
        self.link.publish(self.topics.availability(node), ONLINE, retain=True)
        self._control.submit(self.publish_status, what="status after connecting")
        if self.announcer is not None:
            self._control.submit(self.announcer.announce, what="Home Assistant discovery")

    def _on_message(self, msg: InboundMessage) -> None:
        if self.announcer is not None and msg.topic == self.announcer.birth_topic:
            if self.announcer.on_birth(msg.payload):
                self._control.submit(self.announcer.announce, what="Home Assistant discovery")
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            logger.warning("message on unexpected topic %s ignored", msg.topic)
            return
        if parsed.kind in (TopicKind.CAPTURE, TopicKind.NODE_CAPTURE):
            self._on_capture(msg)
        elif parsed.kind in (TopicKind.SET, TopicKind.FLEET_SETTINGS):
            self._control.submit(self.settings.on_settings, msg, what=f"settings on {msg.topic}")
        elif parsed.kind is TopicKind.SYNC_SERVER:
            self._control.submit(self.settings.on_sync_election, msg, what="camera sync election")
        elif parsed.kind is TopicKind.METER and not msg.retain:
            self._control.submit(self.settings.on_meter, msg, what="metering for an exposure lock")
        elif parsed.kind is TopicKind.CLOCK_PING:
            self._on_clock_ping(msg)
        elif parsed.kind is TopicKind.SITE_BRIDGE and parsed.site:
            self._on_bridge_state(parsed.site, msg.payload)

    def _on_bridge_state(self, site: str, payload: bytes) -> None:
        """The broker holds a site bridge's state: the site it names may be this node's."""
        if self.site.on_bridge_state(site, payload):
            self._control.submit(self.publish_status, what="status with the broker's site")

    def _on_capture(self, msg: InboundMessage) -> None:
        try:
            command = parse_capture_command(msg.payload)
        except PayloadError as exc:
            self._reject(msg, str(exc))
            return
        except Exception as exc:  # a parser bug must cost one command, not the node
            logger.exception("capture command on %s could not be parsed", msg.topic)
            self._reject(msg, f"internal error: {type(exc).__name__}: {exc}"[:300])
            return
        self.captures.submit(
            CaptureRequest(
                command=command,
                received_at=msg.received_at,
                source="mqtt",
                expires_at=msg.expires_at,
                retained=msg.retain,
                expiry_s=msg.expiry_interval,
                token=is_plain_token(msg.payload),
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
                expiry_remaining_s=msg.expiry_interval,
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


def _salvage_capture_id(payload: bytes) -> str | None:
    """The capture id of a rejected JSON command, when it has a usable one.

    Bounded in size and nesting before ``json.loads`` (which recurses: deep nesting would
    raise RecursionError on paho's thread)."""
    if len(payload) > MAX_SALVAGE_BYTES:
        return None
    try:
        check_nesting(payload)
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, PayloadError, RecursionError):
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
