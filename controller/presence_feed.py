"""Availability and status messages off MQTT into a PresenceTracker, for the controller and CLI.

Both ``pepi controller`` (``/api/nodes``, the page) and the one-shot ``pepi nodes`` hand their
messages in here, so a node is judged by one rule: stale after 3 heartbeats without a status,
timed by when the status *arrived*, never by the node's own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pepi_fleet.controller.presence import PresenceTracker, StateChange
from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.status import NodeStatus
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

MAX_STATUS_BYTES = 64 * 1024
PRESENCE_KINDS = frozenset({TopicKind.AVAILABILITY, TopicKind.STATUS})
MAX_BRIDGE_BYTES = 16


def presence_subscriptions(topics: Topics) -> list[str]:
    """What a presence reader subscribes to, sites' bridge states first: at start-up the
    broker hands out retained messages in this order, so a site known to be down is known
    before its nodes' last retained ``online`` arrives."""
    return [topics.all_site_bridges(), topics.all_nodes("availability"), topics.all_nodes("status")]


def apply_bridge_state(
    tracker: PresenceTracker, site: str, msg: InboundMessage
) -> list[StateChange]:
    """Hand a site bridge's notification (``1``/``0``; empty when cleared) to ``tracker``."""
    if len(msg.payload) > MAX_BRIDGE_BYTES:
        logger.warning("ignoring an oversized bridge state of site %s", site)
        return tracker.tick()
    text = msg.payload.decode("utf-8", "replace")
    return tracker.on_bridge(site, text, msg.received_at)


@dataclass(frozen=True)
class PresenceMessage:
    """One node's decoded availability or status message and when it arrived."""

    kind: TopicKind
    node_id: str
    received_at: float
    availability: str = ""
    """The availability payload (``online``, ``offline``; empty when cleared)."""
    status: NodeStatus | None = None
    """The heartbeat of a status message; None when the retained status was cleared."""

    @classmethod
    def decode(cls, kind: TopicKind, node_id: str, msg: InboundMessage) -> PresenceMessage:
        """Decode ``msg`` of a presence topic; PayloadError for a status that is not one."""
        if kind is TopicKind.AVAILABILITY:
            text = msg.payload.decode("utf-8", "replace").strip()
            return cls(kind, node_id, msg.received_at, availability=text)
        if kind is not TopicKind.STATUS:
            raise ValueError(f"{kind} is not a presence topic")
        status = decode(NodeStatus, msg.payload, MAX_STATUS_BYTES) if msg.payload else None
        return cls(kind, node_id, msg.received_at, status=status)

    def apply_to(self, tracker: PresenceTracker) -> list[StateChange]:
        """Hand the message to ``tracker``; the state changes it caused."""
        if self.kind is TopicKind.AVAILABILITY:
            return tracker.on_availability(self.node_id, self.availability)
        return tracker.on_status(self.node_id, self.status, self.received_at)


def tracker_from_messages(
    topics: Topics, messages: Iterable[InboundMessage], clock: Callable[[], float]
) -> PresenceTracker:
    """A tracker fed ``messages`` in order (what a one-shot session read); other topics are
    skipped, and so is a status that does not decode (with a warning)."""
    tracker = PresenceTracker(clock)
    for msg in messages:
        parsed = topics.parse(msg.topic)
        if parsed is not None and parsed.kind is TopicKind.SITE_BRIDGE and parsed.site:
            apply_bridge_state(tracker, parsed.site, msg)
            continue
        if parsed is None or parsed.node_id is None or parsed.kind not in PRESENCE_KINDS:
            continue
        try:
            message = PresenceMessage.decode(parsed.kind, parsed.node_id, msg)
        except PayloadError as exc:
            logger.warning("bad status from %s: %s", parsed.node_id, exc)
            continue
        message.apply_to(tracker)
    return tracker
