"""Every MQTT topic string, built and parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import validate_node_id, validate_site_id

DEFAULT_ROOT = "pepi/v1"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"


class TopicKind(StrEnum):
    """What a topic under the root carries."""

    CAPTURE = "capture"
    NODE_CAPTURE = "node_capture"
    AVAILABILITY = "availability"
    STATUS = "status"
    RESULT = "result"
    PREVIEW = "preview"
    LIVE = "live"
    SET = "set"
    FLEET_SETTINGS = "fleet_settings"
    METER = "meter"
    METER_READING = "meter_reading"
    SYNC_SERVER = "sync_server"
    CLOCK_PING = "clock_ping"
    CLOCK_PONG = "clock_pong"
    SECRET = "secret"
    CONTROLLER_AVAILABILITY = "controller_availability"
    CONTROLLER_CAPTURES = "controller_captures"
    CONTROLLER_STATE = "controller_state"
    CONTROLLER_COMMAND = "controller_command"
    SITE_BRIDGE = "site_bridge"


_NODE_LEAVES = {
    "capture": TopicKind.NODE_CAPTURE,
    "availability": TopicKind.AVAILABILITY,
    "status": TopicKind.STATUS,
    "result": TopicKind.RESULT,
    "preview": TopicKind.PREVIEW,
    "live": TopicKind.LIVE,
    "set": TopicKind.SET,
    "meter": TopicKind.METER,
    "meter/reading": TopicKind.METER_READING,
    "clock/ping": TopicKind.CLOCK_PING,
    "clock/pong": TopicKind.CLOCK_PONG,
    "secret": TopicKind.SECRET,
}


@dataclass(frozen=True)
class ParsedTopic:
    """A topic split into what it is and which node it concerns."""

    kind: TopicKind
    node_id: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class Topics:
    """Topic builder for one root (default ``pepi/v1``)."""

    root: str = DEFAULT_ROOT
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX

    def __post_init__(self) -> None:
        if not self.root or any(c in self.root for c in "#+\0") or self.root.endswith("/"):
            raise PayloadError(f"invalid topic root {self.root!r}: no wildcards, no trailing /")

    def capture(self) -> str:
        """The broadcast trigger every node listens to."""
        return f"{self.root}/capture"

    def node(self, node_id: str, leaf: str) -> str:
        return f"{self.root}/nodes/{validate_node_id(node_id)}/{leaf}"

    def node_capture(self, node_id: str) -> str:
        return self.node(node_id, "capture")

    def availability(self, node_id: str) -> str:
        return self.node(node_id, "availability")

    def status(self, node_id: str) -> str:
        return self.node(node_id, "status")

    def result(self, node_id: str) -> str:
        return self.node(node_id, "result")

    def preview(self, node_id: str) -> str:
        return self.node(node_id, "preview")

    def live_preview(self, node_id: str) -> str:
        """Low-rate live JPEG of camera 0 (a Home Assistant MQTT camera), QoS 0."""
        return self.node(node_id, "live")

    def settings(self, node_id: str) -> str:
        return self.node(node_id, "set")

    def fleet_settings(self) -> str:
        """Settings for every node (retained: a node that starts later gets them too)."""
        return f"{self.root}/settings"

    def sync_server(self) -> str:
        """The elected libcamera sync server (retained; ``--sync-role elected`` nodes follow)."""
        return f"{self.root}/sync/server"

    def meter(self, node_id: str) -> str:
        """Ask a node to let its cameras settle auto exposure and report them (lock exposure)."""
        return self.node(node_id, "meter")

    def meter_reading(self, node_id: str) -> str:
        """A node's answer to ``meter``: what its camera settled on."""
        return self.node(node_id, "meter/reading")

    def clock_ping(self, node_id: str) -> str:
        return self.node(node_id, "clock/ping")

    def clock_pong(self, node_id: str) -> str:
        return self.node(node_id, "clock/pong")

    def secret(self, node_id: str) -> str:
        """The node's Thrift extension secret (retained; only the controller may read it)."""
        return self.node(node_id, "secret")

    def all_nodes(self, leaf: str) -> str:
        """Subscription filter for ``leaf`` of every node."""
        return f"{self.root}/nodes/+/{leaf}"

    def controller_availability(self) -> str:
        return f"{self.root}/controller/availability"

    def controller_captures(self) -> str:
        return f"{self.root}/controller/captures"

    def controller_state(self) -> str:
        """Retained fleet and last-set figures (Home Assistant sensors)."""
        return f"{self.root}/controller/state"

    def controller_command(self) -> str:
        """Commands to the controller (Home Assistant buttons and numbers)."""
        return f"{self.root}/controller/command"

    def site_bridge(self, site: str) -> str:
        """A site broker's bridge state (``1`` up, ``0`` down; retained, published by
        mosquitto as the bridge's ``notification_topic``)."""
        return f"{self.root}/sites/{validate_site_id(site)}/bridge"

    def all_site_bridges(self) -> str:
        """Subscription filter for every site's bridge state."""
        return f"{self.root}/sites/+/bridge"

    def discovery(self, object_id: str) -> str:
        """Home Assistant device-based discovery config topic."""
        return f"{self.discovery_prefix}/device/{object_id}/config"

    def parse(self, topic: str) -> ParsedTopic | None:
        """Classify a topic under this root; None for anything else."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        if rest == "capture":
            return ParsedTopic(TopicKind.CAPTURE)
        if rest == "settings":
            return ParsedTopic(TopicKind.FLEET_SETTINGS)
        if rest == "sync/server":
            return ParsedTopic(TopicKind.SYNC_SERVER)
        if rest == "controller/availability":
            return ParsedTopic(TopicKind.CONTROLLER_AVAILABILITY)
        if rest == "controller/captures":
            return ParsedTopic(TopicKind.CONTROLLER_CAPTURES)
        if rest == "controller/state":
            return ParsedTopic(TopicKind.CONTROLLER_STATE)
        if rest == "controller/command":
            return ParsedTopic(TopicKind.CONTROLLER_COMMAND)
        parts = rest.split("/", 2)
        if len(parts) == 3 and parts[0] == "sites" and parts[2] == "bridge":
            try:
                return ParsedTopic(TopicKind.SITE_BRIDGE, site=validate_site_id(parts[1]))
            except PayloadError:
                return None
        if len(parts) != 3 or parts[0] != "nodes":
            return None
        kind = _NODE_LEAVES.get(parts[2])
        if kind is None:
            return None
        try:
            node_id = validate_node_id(parts[1])
        except PayloadError:
            return None
        return ParsedTopic(kind, node_id)
