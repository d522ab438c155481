"""The long-running controller: MQTT in, presence + capture sets + ledger, downloads out."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from pepi_fleet import __version__
from pepi_fleet.controller.camera_settings import (
    CameraSettingsDesk,
    LockError,
    Reference,
    choose_reference,
)
from pepi_fleet.controller.capture_sets import CaptureSetBook, SetKind, build_summary
from pepi_fleet.controller.clock_check import clock_warnings
from pepi_fleet.controller.clock_probe import ClockBook, ClockEstimate, ProbeRotation
from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.downloader import RECONCILE_BUDGET_PER_S, Downloader
from pepi_fleet.controller.events import EventHub
from pepi_fleet.controller.home_assistant import CHOICES_FILE, HomeAssistantBridge, LockExposure
from pepi_fleet.controller.ledger import Ledger, SetDetail
from pepi_fleet.controller.node_client import Endpoint, NodeClient, NodeClientFactory
from pepi_fleet.controller.presence import NodeState, NodeView, PresenceTracker, StateChange
from pepi_fleet.controller.presence_feed import (
    PRESENCE_KINDS,
    PresenceMessage,
    apply_bridge_state,
)
from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S
from pepi_fleet.controller.sync_election import SyncElection
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.controller.trigger_lead import (
    LeadEstimate,
    LeadEstimator,
    delivery_latency_s,
)
from pepi_fleet.core.availability import OFFLINE, ONLINE
from pepi_fleet.core.decode import decode
from pepi_fleet.core.frame_grid import align_to_frame_grid
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink
from pepi_fleet.schemas.capture import (
    CaptureCommand,
    CaptureResult,
    parse_capture_command,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.discovery import ha_status_topic
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.secret import NodeSecret
from pepi_fleet.schemas.status import NodeSettings
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

TICK_S = 0.2
ELECTION_S = 1.0
"""How often the camera sync server election looks at the fleet."""
RETRY_SWEEP_S = 5.0
RECONCILES_PER_SWEEP = int(RECONCILE_BUDGET_PER_S * RETRY_SWEEP_S)
RELEASES_PER_SWEEP = 100
MAX_RESULT_BYTES = 256 * 1024
MAX_PONG_BYTES = 1024
MAX_SECRET_BYTES = 1024
SENT_KEPT = 1024
"""Send times of the controller's own latest triggers, kept to measure their delivery."""
RESULTS_PER_COMMIT = 200
"""Results recorded in one ledger transaction at most (others wait for the ledger meanwhile)."""


class _Kind(Enum):
    """How the worker takes a message (see ``Controller.receive``)."""

    STEADY = "steady"  # heartbeats and clock pongs: handled at the next wake-up, in batches
    RESULT = "result"  # wakes the worker; one after another, recorded in one transaction
    OTHER = "other"  # wakes the worker


_KINDS = {
    TopicKind.STATUS: _Kind.STEADY,
    TopicKind.CLOCK_PONG: _Kind.STEADY,
    TopicKind.RESULT: _Kind.RESULT,
}


_ANNOUNCE = InboundMessage(topic="", payload=b"", retain=False, received_at=0.0)
"""Queued by ``_on_connected``: announce to Home Assistant from the worker thread."""


@dataclass
class _AwaitingDownload:
    summary: CaptureSetSummary
    give_up_at: float


class Controller:
    """Owns the MQTT link and one worker thread; paho callbacks only enqueue.

    Nodes' captures are reached through ``node_clients`` (default: Thrift at each node's
    advertised endpoint, with the configured timeout and the secret the node published).
    """

    def __init__(
        self,
        config: ControllerConfig,
        clock: Callable[[], float] = time.time,
        node_clients: NodeClientFactory | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics(config.topic_root, discovery_prefix=config.discovery_prefix)
        self._clock = clock
        self.events = EventHub()
        self.presence = PresenceTracker(clock)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(config.data_dir, clock, thrift_hold_s=config.thrift_hold_s)
        self.book = CaptureSetBook(
            clock,
            timeout_s=config.set_timeout_s,
            fire_tolerance_s=config.fire_tolerance_s,
            known_set=self.ledger.has_set,
            held_before=self.ledger.holds_other_capture,
        )
        self.downloader = Downloader(
            self.ledger,
            config.data_dir,
            self.endpoint_of,
            node_clients or self._thrift_client,
            workers=config.download_workers,
            clock=clock,
            clock_of=self._clock_pair,
            listening_since=lambda: self._listening_since,
        )
        self._listening_since: float | None = None
        self._lock = threading.Lock()  # guards presence and book against the web thread
        self._secrets: dict[str, str] = {}  # node id -> its Thrift secret (guarded by _lock)
        # Every message in arrival order (see ``receive``), and the wake-up of the worker.
        self._arrived: deque[tuple[_Kind, InboundMessage]] = deque()
        self._wake = threading.Event()
        self._awaiting: dict[str, _AwaitingDownload] = {}
        self._late: dict[str, CaptureSetSummary] = {}  # summarised before downloads were done
        self.clocks = ClockBook()
        self._ping_seq = 0
        # Every online node is pinged when it comes online, then in turn within a fleet-wide
        # budget (the best of its last 16 pongs is used).
        self.probes = ProbeRotation()
        # Trigger delivery latency per node (guarded by _lock), for ``at = now + lead``.
        self.lead = LeadEstimator()
        self._sent: OrderedDict[str, float] = OrderedDict()  # capture id -> publish time
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="controller", daemon=True)
        t = self.topics
        self.ha = HomeAssistantBridge(
            t,
            lambda topic, payload, retain: self.link.publish(topic, payload, retain=retain),
            __version__,
            _page_url(config.web_host, config.web_port, https=config.tls_cert is not None),
            clock,
            enabled=config.discovery,
            choices_file=config.data_dir / CHOICES_FILE,
        )
        self.camera_settings = CameraSettingsDesk(
            t,
            lambda topic, payload, retain: self.link.publish(topic, payload, retain=retain),
            on_fleet=self._fleet_settings_changed,
        )
        self.sync_election = SyncElection(
            t,
            lambda topic, payload, retain: self.link.publish(topic, payload, retain=retain),
            clock,
        )
        self._next_election = 0.0
        self.link = MqttLink(
            BrokerAddress.parse(config.broker),
            LinkOptions(
                client_id=f"pepi-controller-{uuid.uuid4().hex[:8]}",
                username=config.username,
                password=config.password,
                will_topic=t.controller_availability(),
                ca_file=str(config.ca_file) if config.ca_file else None,
                subscriptions=(
                    # first: the retained election arrives before the statuses it is judged by
                    (t.sync_server(), 1),
                    (t.capture(), 1),
                    (t.all_nodes("capture"), 1),
                    # before the nodes' topics: a site known down before its retained online
                    (t.all_site_bridges(), 1),
                    (t.all_nodes("availability"), 1),
                    # QoS 0: a clean session gains nothing from QoS 1 within a connection
                    # (TCP is in order and lossless), and a heartbeat every few seconds from
                    # every node need not cost a PUBACK each; the broker's queue limit
                    # applies alike. Results and availability stay QoS 1.
                    (t.all_nodes("status"), 0),
                    (t.all_nodes("result"), 1),
                    (t.all_nodes("clock/pong"), 0),
                    (t.all_nodes("secret"), 1),
                    *self.ha.subscriptions(),
                    *self.camera_settings.subscriptions(),
                ),
            ),
            on_message=self.receive,
            on_connected=self._on_connected,
            on_disconnected=lambda reason: self.events.emit(
                "broker", connected=False, reason=reason
            ),
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.downloader.remove_partial_files()
        self._recover_summaries()
        self._worker.start()
        self.link.start()

    def _recover_summaries(self) -> None:
        """Sets a previous run never summarised: publish once their downloads are done."""
        for set_id in self.ledger.unsummarized():
            if self.book.get(set_id) is None and self._await_from_ledger(set_id):
                logger.info("capture set %s from a previous run: summary pending", set_id)

    def _await_from_ledger(self, set_id: str) -> bool:
        """Summarise a set known only to the ledger once its downloads are done."""
        now = self._clock()
        detail = self.ledger.get_set(set_id)
        if detail is None:
            return False
        summary = summary_from_ledger(
            detail, detail.record.completed_at or now, self.config.fire_tolerance_s
        )
        if detail.record.completed_at is None:
            self.ledger.set_complete(set_id, now, whole=summary.complete)
        self._awaiting[set_id] = _AwaitingDownload(summary, now + self.config.download_wait_s)
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._worker.join(timeout=10)
        self.link.stop(final=(self.topics.controller_availability(), OFFLINE))
        self.downloader.close()
        self.ledger.close()

    def _on_connected(self) -> None:
        self._listening_since = self._clock()  # subscribed: results from now on reach us
        self.link.publish(self.topics.controller_availability(), ONLINE, retain=True)
        self.receive(_ANNOUNCE)  # discovery and state, built on the worker thread
        self.events.emit("broker", connected=True)

    # -- queries and commands (any thread) -----------------------------------------------------

    def receive(self, msg: InboundMessage) -> None:
        """Hand one inbound message to the worker thread (paho's callback; nothing blocks).

        Fleet settings and meter readings are only recorded, here: a lock waiting for a
        reading must not wait behind the worker's queue.

        Heartbeats and clock pongs, a fleet's steady stream, wait for the worker's next
        wake-up (at the latest its next tick) instead of waking it each: 1000 nodes cost a
        few wake-ups a second, not hundreds. They keep the time they arrived (staleness is
        judged by it). Every message is handled in the order it arrived.
        """
        try:
            if self.camera_settings.on_message(msg):
                return
        except PayloadError as exc:
            logger.warning("bad payload on %s ignored: %s", msg.topic, exc)
            return
        parsed = self.topics.parse(msg.topic) if msg.payload else None
        kind = _Kind.OTHER if parsed is None else _KINDS.get(parsed.kind, _Kind.OTHER)
        self._arrived.append((kind, msg))
        if kind is not _Kind.STEADY:
            self._wake.set()

    def set_camera_settings(self, change: NodeSettings, node_id: str | None = None) -> NodeSettings:
        """Apply ``change`` to one node, or merge it into the fleet's retained settings.

        Returns what the fleet (or that node, for this change) is now asked for."""
        if node_id is not None:
            self.camera_settings.set_node(node_id, change)
            return change
        fleet = self.camera_settings.set_fleet(change)
        self._fleet_settings_changed(fleet)
        return fleet

    def clear_camera_settings(self) -> None:
        """Forget the fleet's retained camera settings (nodes keep what they have)."""
        self.camera_settings.clear_fleet()
        self._fleet_settings_changed(NodeSettings())

    def _fleet_settings_changed(self, fleet: NodeSettings) -> None:
        self.events.emit("settings", fleet=fleet.model_dump(mode="json", exclude_none=True))

    def lock_exposure(
        self, reference: str | Reference | None = None, settle_s: float | None = None
    ) -> tuple[Reference, NodeSettings]:
        """Meter ``reference`` (default: first online node, camera 0), lock the fleet to it.

        Blocks for the settle time and the node's answer; LockError when it cannot."""
        online = [v.node_id for v in self.nodes() if v.state is NodeState.ONLINE]
        chosen = choose_reference(reference, online)
        if settle_s is None:
            locked = self.camera_settings.lock(chosen)
        else:
            locked = self.camera_settings.lock(chosen, settle_s)
        logger.info("exposure locked to %s: %s", chosen, locked.model_dump(exclude_none=True))
        self._fleet_settings_changed(locked)
        return chosen, locked

    @property
    def broker_connected(self) -> bool:
        return self.link.connected.is_set()

    def nodes(self) -> list[NodeView]:
        """Every node the controller knows, with state and last status (thread-safe)."""
        with self._lock:
            return self.presence.nodes()

    def bridges(self) -> dict[str, bool]:
        """Each bridged site whose bridge state is known: True while it is up."""
        with self._lock:
            return self.presence.bridges()

    def node(self, node_id: str) -> NodeView | None:
        with self._lock:
            return self.presence.node(node_id)

    def secret_of(self, node_id: str) -> str | None:
        """The Thrift secret the node published (None until it has)."""
        with self._lock:
            return self._secrets.get(node_id)

    def _thrift_client(self, node_id: str, endpoint: Endpoint) -> NodeClient:
        return ThriftNodeClient(
            node_id,
            endpoint,
            timeout_ms=self.config.thrift_timeout_ms,
            secret=lambda: self.secret_of(node_id),
        )

    def endpoint_of(self, node_id: str) -> Endpoint | None:
        """Thrift address of a node that is online now."""
        with self._lock:
            view = self.presence.node(node_id)
        if view is None or view.status is None or view.state is not NodeState.ONLINE:
            return None
        return view.status.thrift.host, view.status.thrift.port

    def trigger(
        self, capture_id: str | None = None, at: float | None = None, node_id: str | None = None
    ) -> str:
        """Publish a capture command; the set is opened when it comes back from the broker."""
        capture_id = capture_id or new_capture_id(self._clock())
        command = CaptureCommand(capture_id=capture_id, at=at)
        topic = self.topics.node_capture(node_id) if node_id else self.topics.capture()
        # An immediate trigger is worthless once late: a node cut off for a few seconds must
        # not fire it seconds after the others (a scheduled one carries ``at`` for that).
        expiry = self.config.trigger_expiry_s if at is None else None
        with self._lock:
            self._sent[capture_id] = self._clock()
            while len(self._sent) > SENT_KEPT:
                self._sent.popitem(last=False)
        self.link.publish(topic, command.model_dump_json(exclude_none=True), qos=1, expiry_s=expiry)
        return capture_id

    def trigger_lead(self) -> LeadEstimate:
        """How far ahead a capture is scheduled when no time is given (thread-safe)."""
        with self._lock:
            return self.lead.estimate()

    # -- worker thread --------------------------------------------------------------------------

    def _run(self) -> None:
        # Time-driven work (staleness, set deadlines, summaries, probes) runs on a timer of
        # its own, never once per message: a burst of N messages costs N small handlers.
        next_tick = next_sweep = 0.0
        while not self._stopping.is_set():
            self._wake.wait(timeout=max(0.0, next_tick - time.monotonic()))
            self._wake.clear()  # before handling: a message arriving meanwhile wakes us again
            self._handle_arrived()  # every heartbeat heard so far counts before the tick judges
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                self._tick()
            if self._clock() >= next_sweep:
                next_sweep = self._clock() + RETRY_SWEEP_S
                self._retry_owed()

    def _handle_arrived(self) -> None:
        """Handle what arrived, in order; results that came one after another are recorded
        in one ledger transaction (a fleet's burst of results costs a few commits)."""
        arrived = self._arrived
        while arrived:
            kind, msg = arrived.popleft()
            if kind is not _Kind.RESULT:
                self._handle_safely(msg)
                continue
            batch = [msg]
            while arrived and arrived[0][0] is _Kind.RESULT and len(batch) < RESULTS_PER_COMMIT:
                batch.append(arrived.popleft()[1])
            try:
                with self.ledger.batch():
                    for result in batch:
                        self._handle_safely(result)
            except Exception:
                logger.exception("ledger: %d results could not be committed", len(batch))

    def _handle_safely(self, msg: InboundMessage) -> None:
        try:
            self._handle(msg)
        except Exception:
            logger.exception("message on %s could not be handled", msg.topic)

    def _handle(self, msg: InboundMessage) -> None:
        if msg is _ANNOUNCE:
            self._count_nodes()
            self.ha.on_connected()
            return
        if self.ha.enabled and msg.topic == ha_status_topic(self.topics):
            self.ha.on_birth(msg.payload)
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            return
        if parsed.kind is TopicKind.SYNC_SERVER:
            try:
                self.sync_election.on_message(msg)
            except PayloadError as exc:
                logger.warning("bad camera sync election on %s ignored: %s", msg.topic, exc)
            return
        if parsed.kind is TopicKind.CONTROLLER_COMMAND:
            if self.ha.enabled and not msg.retain:
                self._on_command(msg)
            return
        if parsed.kind in (TopicKind.CAPTURE, TopicKind.NODE_CAPTURE):
            self._on_trigger(msg, parsed.node_id)
        elif parsed.kind in PRESENCE_KINDS and parsed.node_id:
            self._on_presence(parsed.kind, parsed.node_id, msg)
        elif parsed.kind is TopicKind.SITE_BRIDGE and parsed.site:
            with self._lock:
                changes = apply_bridge_state(self.presence, parsed.site, msg)
            self._presence_changed(changes)
        elif parsed.kind is TopicKind.RESULT and parsed.node_id:
            self._on_result(parsed.node_id, msg)
        elif parsed.kind is TopicKind.CLOCK_PONG and parsed.node_id:
            self._on_pong(parsed.node_id, msg)
        elif parsed.kind is TopicKind.SECRET and parsed.node_id:
            self._on_secret(parsed.node_id, msg)

    def _on_secret(self, node_id: str, msg: InboundMessage) -> None:
        if not msg.payload:  # cleared (pepi controller forget)
            with self._lock:
                self._secrets.pop(node_id, None)
            return
        try:
            secret = decode(NodeSecret, msg.payload, MAX_SECRET_BYTES).secret
        except PayloadError as exc:
            logger.warning("bad secret from %s: %s", node_id, exc)
            return
        with self._lock:
            self._secrets[node_id] = secret

    def _on_trigger(self, msg: InboundMessage, target: str | None) -> None:
        if msg.retain:
            return  # nodes never fire retained triggers; neither do we open a set for one
        try:
            command = parse_capture_command(msg.payload)
        except PayloadError as exc:
            logger.info("trigger on %s not a capture command (%s); nodes report it", msg.topic, exc)
            return
        with self._lock:
            views = self.presence.nodes()
            online = [v for v in views if v.state is NodeState.ONLINE]
            expected = {v.node_id for v in online}
            # behind a bridge that is down: not waited for, named per site in the summary
            unreachable = {
                v.node_id: v.site for v in views if v.state is NodeState.UNREACHABLE and v.site
            }
            cameras = {
                v.node_id: command.cameras or [c.index for c in v.status.cameras]
                for v in online
                if v.status is not None
            }
            view = self.book.open_trigger(
                command.capture_id,
                expected,
                msg.received_at,
                target,
                at=command.at,
                cameras=cameras,
                unreachable=unreachable,
            )
        self.ledger.record_set(
            view.set_id,
            view.triggered_at,
            view.expected,
            kind=str(view.kind),
            at=view.at,
            target_node=view.target_node,
            unreachable=view.unreachable,
        )
        warnings = self.clock_warnings(view.expected) if view.at is not None else []
        for warning in warnings:
            logger.warning("scheduled capture %s: %s", view.set_id, warning)
        self.events.emit(
            "set_opened",
            capture_id=view.set_id,
            expected=sorted(view.expected),
            at=view.at,
            clock_warnings=warnings,
        )
        logger.info("capture set %s opened, expecting %s", view.set_id, sorted(view.expected))

    def _on_presence(self, kind: TopicKind, node_id: str, msg: InboundMessage) -> None:
        try:
            message = PresenceMessage.decode(kind, node_id, msg)
        except PayloadError as exc:
            logger.warning("bad status from %s: %s", node_id, exc)
            return
        with self._lock:
            changes = message.apply_to(self.presence)
        self._presence_changed(changes)
        if message.status is not None and self.events.listened():
            status = message.status.model_dump(mode="json")
            self.events.emit("status", node_id=node_id, status=status)

    def _on_result(self, node_id: str, msg: InboundMessage) -> None:
        try:
            result = decode(CaptureResult, msg.payload, MAX_RESULT_BYTES)
        except PayloadError as exc:
            logger.warning("bad result from %s: %s", node_id, exc)
            return
        if result.node_id != node_id:
            logger.warning("result on %s names node %s; ignored", msg.topic, result.node_id)
            return
        with self._lock:
            assignment = self.book.add_result(result, msg.received_at)
        if assignment is None:
            self.events.emit(
                "result", node_id=node_id, capture_id=None, status=result.status, error=result.error
            )
            return
        if assignment.opened:
            view = self.book.get(assignment.set_id)
            if view is not None:
                self.ledger.record_set(
                    view.set_id, view.triggered_at, view.expected, kind=str(view.kind), at=view.at
                )
        set_id = assignment.set_id
        if not self.ledger.record_result(set_id, result, assignment.node_capture_id):
            earlier = self.ledger.ok_result(set_id, node_id)
            if earlier is not None and earlier.frames != result.frames:
                # The set (from a previous run) already holds another capture of this node
                # under the id: a re-capture, kept apart rather than dropped.
                set_id = self.ledger.free_set_id(set_id)
                self.ledger.record_result(set_id, result, assignment.node_capture_id)
                self._await_from_ledger(set_id)
                logger.info(
                    "result %s of node %s filed as set %s", result.capture_id, node_id, set_id
                )
        self.events.emit(
            "result",
            node_id=node_id,
            capture_id=assignment.set_id,
            node_capture_id=assignment.node_capture_id,
            status=result.status,
            error=result.error,
            frames=len(result.frames),
        )
        self._measure_delivery(node_id, result, assignment.set_id)
        if result.frames:
            self.downloader.submit(node_id)

    def _measure_delivery(self, node_id: str, result: CaptureResult, set_id: str) -> None:
        """One latency sample: trigger sent (controller clock) → received (node clock, its
        measured offset removed). A trigger someone else sent counts from when the
        controller received its own copy (a lower bound: it is a subscriber too)."""
        if result.source != "mqtt":
            return
        clock = self.clocks.estimate(node_id)
        view = self.book.get(set_id)
        if clock is None or view is None or view.kind is SetKind.ORPHAN:
            return
        with self._lock:
            sent = self._sent.get(set_id, view.triggered_at)
            self.lead.add(node_id, delivery_latency_s(sent, result.received_at, clock.offset_s))

    def _on_pong(self, node_id: str, msg: InboundMessage) -> None:
        try:
            pong = decode(ClockPong, msg.payload, MAX_PONG_BYTES)
        except PayloadError as exc:
            logger.warning("bad clock pong from %s: %s", node_id, exc)
            return
        measured_before = self.clocks.estimate(node_id) is not None
        if self.clocks.add(node_id, pong, msg.received_at) is None:
            logger.warning("clock pong from %s has impossible timestamps; ignored", node_id)
        elif not measured_before:
            self.downloader.clock_known(node_id)

    def clock_of(self, node_id: str) -> ClockEstimate | None:
        """The node's clock offset and round trip as measured over MQTT, if any yet."""
        return self.clocks.estimate(node_id)

    def _clock_pair(self, node_id: str) -> tuple[float, float] | None:
        est = self.clocks.estimate(node_id)
        return None if est is None else (est.offset_s, est.rtt_s)

    def clock_warnings(
        self, node_ids: Iterable[str], tolerance_s: float | None = None
    ) -> list[str]:
        """Nodes whose clock offset (plus its uncertainty) exceeds the sync tolerance
        (``tolerance_s``, else the configured one), or is not measured yet."""
        tolerance = self.config.clock_tolerance_s if tolerance_s is None else tolerance_s
        return clock_warnings(node_ids, self.clocks.estimate, tolerance)

    def _probe_clocks(self, now: float) -> None:
        if not self.link.connected.is_set():
            return
        for node_id in self.probes.due(now, self._is_online):
            self._ping(node_id)

    def _is_online(self, node_id: str) -> bool:
        return self.presence.state_of(node_id) is NodeState.ONLINE

    def _ping(self, node_id: str) -> None:
        self._ping_seq += 1
        ping = ClockPing(seq=self._ping_seq, t1=self._clock())
        self.link.publish(self.topics.clock_ping(node_id), ping.model_dump_json(), qos=0)

    def _on_command(self, msg: InboundMessage) -> None:
        scheduled = self.ha.on_command(msg.payload)
        if isinstance(scheduled, LockExposure):
            # metering takes seconds: not on the worker thread
            threading.Thread(
                target=self._lock_from_command, args=(scheduled,), name="lock", daemon=True
            ).start()
            return
        if scheduled is None:
            return
        delay = scheduled.delay_s
        if delay is None:
            delay = self.trigger_lead().lead_s
        at = align_to_frame_grid(self._clock() + delay, self.config.align_fps)
        capture_id = self.trigger(at=at)
        how = "fixed" if scheduled.delay_s is not None else "adaptive"
        logger.info(
            "Home Assistant: capture %s scheduled at %.3f (%s delay %.3f s)",
            capture_id, at, how, delay,
        )  # fmt: skip

    def _lock_from_command(self, command: LockExposure) -> None:
        try:
            self.lock_exposure(command.reference)
        except (LockError, PayloadError) as exc:
            logger.error("lock exposure (MQTT command) failed: %s", exc)

    def _count_nodes(self) -> None:
        with self._lock:
            counts = self.presence.counts()
        self.ha.update_counts(
            online=counts[NodeState.ONLINE],
            stale=counts[NodeState.STALE],
            offline=counts[NodeState.OFFLINE],
            unreachable=counts[NodeState.UNREACHABLE],
        )

    def _presence_changed(self, changes: list[StateChange]) -> None:
        if changes:
            self._count_nodes()
        for change in changes:
            self.events.emit("presence", node_id=change.node_id, old=change.old, state=change.new)
            if change.new is not NodeState.ONLINE:
                with self._lock:  # not expected in the next capture: its latency is moot
                    self.lead.drop(change.node_id)
            # An offline node's clock estimate is kept: a manifest written once its images
            # arrive needs the offset from when it captured (its last 16 probes count).
            if change.new is NodeState.ONLINE:
                self._ping(change.node_id)  # an offset before its first scheduled capture
                self.probes.add(change.node_id, self._clock())
                self.downloader.submit(change.node_id, force=True)  # ask again for what it owes

    def _tick(self) -> None:
        with self._lock:
            changes = self.presence.tick()
            summaries = self.book.tick()
        self._presence_changed(changes)
        self.ha.update_lead(self.trigger_lead())
        self.ha.flush()
        self.downloader.flush_manifests()
        now = self._clock()
        self._probe_clocks(now)
        if now >= self._next_election and self.link.connected.is_set():
            self._next_election = now + ELECTION_S
            with self._lock:
                nodes = self.presence.nodes()
            self.sync_election.update(nodes)
        while True:
            try:
                self._await_from_ledger(self.downloader.recovered.get_nowait())
            except queue.Empty:
                break
        for summary in summaries:
            self.ledger.set_complete(
                summary.capture_id, summary.completed_at, whole=summary.complete
            )
            # The results are in (or the deadline passed): the summary waits a moment for the
            # downloads (a small rig's lists its files), timed from the set's completion, not
            # from the tick that noticed it; then it goes out saying they are pending, and
            # again once every image is verified (a fleet's thousand images).
            self._awaiting[summary.capture_id] = _AwaitingDownload(
                summary, summary.completed_at + self.config.download_wait_s
            )
        for set_id, waiting in list(self._awaiting.items()):
            owing = self.ledger.nodes_owing(set_id)  # one indexed query per set waiting
            if not owing or now >= waiting.give_up_at or self._all_absent(owing):
                del self._awaiting[set_id]
                self._publish_summary(waiting.summary, not owing)
                if owing:
                    self._late[set_id] = waiting.summary
        for set_id, summary in list(self._late.items()):
            if self.ledger.all_downloaded(set_id):
                # Published with downloads pending; now they are done.
                del self._late[set_id]
                self._publish_summary(summary, True)

    def _all_absent(self, owing: set[str]) -> bool:
        """Whether every node still owing images of a set is known to be away (offline,
        stale, removed): no use holding the summary back for them. A node not heard of
        yet (just after a restart) is waited for. Stops at the first node online."""
        with self._lock:
            for node_id in owing:
                state = self.presence.state_of(node_id)
                if state is None or state is NodeState.ONLINE:
                    return False
        return True

    def _publish_summary(self, summary: CaptureSetSummary, downloaded: bool) -> None:
        if downloaded:  # before: the manifest lists every image when the summary says so
            self.downloader.ensure_manifest(summary.capture_id)
        files, owed = self.ledger.image_files(summary.capture_id)
        final = summary.model_copy(
            update={
                "downloaded": downloaded,
                "files": sorted(files),
                "data_dir": str(self.config.data_dir.resolve()),
            }
        )
        self.link.publish(self.topics.controller_captures(), final.model_dump_json(), qos=1)
        if not downloaded:  # after: the summary of a fleet's results need not wait for it
            self.downloader.ensure_manifest(summary.capture_id)
        self.ha.update_set(final, len(files), owed)
        if downloaded:  # else a restarted controller summarises it again once it is
            self.ledger.mark_summarized(summary.capture_id)
        self.events.emit("set_complete", summary=final.model_dump(mode="json"))
        logger.info(
            "capture set %s complete: spread %s s, %d files%s",
            final.capture_id,
            final.spread_s,
            len(files),
            "" if downloaded else " (downloads pending)",
        )

    def _retry_owed(self) -> None:
        with self._lock:
            online = self.presence.online_ids()
        # a few nodes a sweep, within the downloader's budget: never the whole fleet at once
        due = set(self.downloader.reconcile_next(online, RECONCILES_PER_SWEEP))
        now = self._clock()
        owing = set(self.ledger.nodes_owing_images(now))
        # Releases are not urgent: a few a sweep, so that after a capture of the whole fleet
        # they do not crowd out the downloads its summary waits for.
        releasing = [n for n in self.ledger.nodes_with_work(now) if n not in owing]
        for node_id in due | owing | set(releasing[:RELEASES_PER_SWEEP]):
            if self.endpoint_of(node_id) is not None:
                self.downloader.submit(node_id)


def summary_from_ledger(
    detail: SetDetail, completed_at: float, fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S
) -> CaptureSetSummary:
    """A set's summary rebuilt from the ledger (after a controller restart)."""
    record = detail.record
    return build_summary(
        record.set_id,
        record.triggered_at,
        completed_at,
        record.expected,
        {r.node_id: r.result for r in detail.results},
        record.spread_s,
        record.fired_spread_s,
        at=record.at,
        fire_tolerance_s=fire_tolerance_s,
        unreachable=record.unreachable,
    )


def _page_url(host: str, port: int, https: bool = False) -> str | None:
    """The web page's address for Home Assistant's device page, when it has a usable one."""
    if host in ("0.0.0.0", "::", "") or port == 0:
        return None
    scheme = "https" if https else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/"


def new_capture_id(now: float) -> str:
    """An explicit id for captures the controller starts: ``cap-<UTC ms>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"cap-{stamp}{int(now * 1000) % 1000:03d}Z"
