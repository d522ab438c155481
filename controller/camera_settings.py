"""Camera settings for the fleet and single nodes, and the lock-exposure action, over MQTT.

Fleet settings go out retained on ``<root>/settings``: the broker holds the merged whole, so
a node that starts (or restarts) later gets every fleet setting in force, not only the last
change. A node's own ``nodes/<node>/set`` is never retained and applies on top, until the
next fleet change. Locking exposure meters one reference camera (``nodes/<node>/meter``),
turns its reading into fixed values (``locked_settings``) and makes them fleet settings.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas.camera import (
    CameraControls,
    CameraSettings,
    locked_settings,
    merge_settings,
)
from pepi_fleet.schemas.errors import PayloadError, PepiError
from pepi_fleet.schemas.exposure import DEFAULT_SETTLE_S, MeterReading, MeterRequest
from pepi_fleet.schemas.ids import validate_node_id
from pepi_fleet.schemas.status import CAMERA_FIELDS, NodeSettings
from pepi_fleet.schemas.topics import TopicKind, Topics

MAX_SETTINGS_BYTES = 4096
METER_ANSWER_S = 10.0
"""How long after settling a reference node has to answer a meter request."""

LOCKED_FIELDS = ("exposure_time_us", "analogue_gain", "colour_gains")
"""What a lock fixes on every camera."""

Publish = Callable[[str, str | bytes, bool], object]
"""publish(topic, payload, retain) at QoS 1."""


class LockError(PepiError):
    """The lock-exposure action could not complete; nothing was applied to the fleet."""


@dataclass(frozen=True)
class Reference:
    """The camera whose settled exposure and white balance the fleet is locked to."""

    node_id: str
    camera: int = 0

    def __str__(self) -> str:
        return f"{self.node_id}:{self.camera}"


def parse_reference(text: str) -> Reference:
    """``NODE`` or ``NODE:CAM``; PayloadError naming the expected form otherwise."""
    node, sep, camera = text.partition(":")
    if sep and not camera.isdigit():
        raise PayloadError(f"reference {text!r}: give NODE or NODE:CAMERA, e.g. cam01:0")
    return Reference(validate_node_id(node), int(camera) if camera else 0)


def choose_reference(given: str | Reference | None, online: Iterable[str]) -> Reference:
    """The given reference (which must be online), else the first online node by id, camera 0."""
    online_ids = sorted(online)
    if given is None:
        if not online_ids:
            raise LockError("no node is online: start a node, then lock the exposure")
        return Reference(online_ids[0])
    reference = parse_reference(given) if isinstance(given, str) else given
    if reference.node_id not in online_ids:
        raise LockError(
            f"reference node {reference.node_id} is not online; online: "
            + (", ".join(online_ids) or "none")
        )
    return reference


def as_node_settings(
    settings: CameraSettings, fields: Iterable[str] = CAMERA_FIELDS
) -> NodeSettings:
    """``fields`` of sensor settings as a ``NodeSettings`` payload."""
    values = settings.model_dump(include=set(fields), exclude_none=True)
    return NodeSettings.model_validate(values, strict=False)


def settings_subscriptions(topics: Topics) -> list[str]:
    """The fleet settings (retained) and every node's meter readings."""
    return [topics.fleet_settings(), topics.all_nodes("meter/reading")]


class CameraSettingsDesk:
    """Keeps the fleet settings the broker holds; sets them, a node's, and locks exposure.

    ``on_message`` must see the fleet settings topic and every node's meter readings (see
    ``subscriptions``); it only records and wakes waiters, so paho's thread may call it.
    """

    def __init__(
        self,
        topics: Topics,
        publish: Publish,
        on_fleet: Callable[[NodeSettings], None] = lambda fleet: None,
    ) -> None:
        self.topics = topics
        self._publish = publish
        self._on_fleet = on_fleet  # fleet settings the broker holds changed (any writer)
        self._lock = threading.Condition()
        self._fleet = NodeSettings()
        self._readings: dict[str, MeterReading] = {}
        self._waiting: set[str] = set()
        self._echoes: dict[str, bytes] = {}  # topic -> last settings payload the broker sent us

    def subscriptions(self) -> list[tuple[str, int]]:
        """What ``on_message`` must see, at QoS 1."""
        return [(topic, 1) for topic in settings_subscriptions(self.topics)]

    def on_message(self, msg: InboundMessage) -> bool:
        """Record fleet settings or a meter reading; False for any other topic."""
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            return False
        if parsed.kind is TopicKind.SET:
            with self._lock:
                self._echoes[msg.topic] = msg.payload
                self._lock.notify_all()
            return True
        if parsed.kind is TopicKind.FLEET_SETTINGS:
            fleet = (
                NodeSettings()
                if not msg.payload
                else decode(NodeSettings, msg.payload, MAX_SETTINGS_BYTES)
            )
            with self._lock:
                changed = fleet != self._fleet
                self._fleet = fleet
                self._echoes[msg.topic] = msg.payload
                self._lock.notify_all()
            if changed:
                self._on_fleet(fleet)
            return True
        if parsed.kind is TopicKind.METER_READING:
            reading = decode(MeterReading, msg.payload, MAX_SETTINGS_BYTES)
            with self._lock:
                if reading.request_id in self._waiting:
                    self._readings[reading.request_id] = reading
                    self._lock.notify_all()
            return True
        return False

    def echoed(self, topic: str, payload: bytes, timeout: float) -> bool:
        """Whether the broker delivers ``payload`` on ``topic`` back to us within ``timeout``:
        it took the publish (a login the ACL denies gets nothing back). Needs a subscription."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._echoes.get(topic) != payload:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def fleet(self) -> NodeSettings:
        """The settings every node gets (what the broker retains)."""
        with self._lock:
            return self._fleet

    def set_fleet(self, change: NodeSettings) -> NodeSettings:
        """Merge ``change`` into the fleet settings and publish the whole, retained."""
        with self._lock:
            merged = merge_settings(self._fleet, change)
            self._fleet = merged
            self._echoes.pop(self.topics.fleet_settings(), None)
        self._publish(self.topics.fleet_settings(), merged.model_dump_json(exclude_none=True), True)
        return merged

    def clear_fleet(self) -> None:
        """Forget the fleet settings (nodes keep what they have; new nodes get none)."""
        with self._lock:
            self._fleet = NodeSettings()
            self._echoes.pop(self.topics.fleet_settings(), None)
        self._publish(self.topics.fleet_settings(), b"", True)

    def set_node(self, node_id: str, change: NodeSettings) -> None:
        """Send ``change`` to one node (not retained: the fleet's settings win after a restart)."""
        topic = self.topics.settings(validate_node_id(node_id))
        with self._lock:
            self._echoes.pop(topic, None)
        self._publish(topic, change.model_dump_json(exclude_none=True), False)

    def meter(
        self,
        reference: Reference,
        settle_s: float = DEFAULT_SETTLE_S,
        answer_s: float = METER_ANSWER_S,
    ) -> CameraControls:
        """What ``reference`` settles on under automatic exposure and white balance."""
        request = MeterRequest(
            request_id=uuid.uuid4().hex[:16], camera=reference.camera, settle_s=settle_s
        )
        with self._lock:
            self._waiting.add(request.request_id)
        try:
            self._publish(self.topics.meter(reference.node_id), request.model_dump_json(), False)
            deadline = time.monotonic() + settle_s + answer_s
            with self._lock:
                while request.request_id not in self._readings:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockError(
                            f"reference {reference} did not report its exposure within "
                            f"{settle_s + answer_s:.0f} s: is the node online and up to date, "
                            "and may this login meter it (controller or automation user)?"
                        )
                    self._lock.wait(left)
                reading = self._readings[request.request_id]
        finally:
            with self._lock:
                self._waiting.discard(request.request_id)
                self._readings.pop(request.request_id, None)
        if reading.error is not None or reading.controls is None:
            raise LockError(f"reference {reference} could not meter: {reading.error}")
        return reading.controls

    def lock(
        self,
        reference: Reference,
        settle_s: float = DEFAULT_SETTLE_S,
        answer_s: float = METER_ANSWER_S,
    ) -> NodeSettings:
        """Meter ``reference`` and make its values the fleet's fixed settings; the new whole.

        Exposure time, gain and colour gains are locked; focus is not, since each camera
        focuses at its own distance and a camera without a focus motor would refuse it.
        """
        controls = self.meter(reference, settle_s, answer_s)
        try:
            locked = locked_settings(controls)
        except PayloadError as exc:
            raise LockError(str(exc)) from exc
        return self.set_fleet(as_node_settings(locked, LOCKED_FIELDS))
