"""Node presence: a pure state machine fed by availability and status messages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from pepi_fleet.core.availability import OFFLINE, ONLINE
from pepi_fleet.schemas import NodeStatus

logger = logging.getLogger(__name__)

STALE_AFTER_HEARTBEATS = 3.0
"""A node is stale after this many of its own heartbeat periods without a status."""
CONFLICT_WINDOW_S = 60.0
"""Statuses of one id from two addresses within this window: two machines share the id."""


class NodeState(StrEnum):
    """What the controller believes about a node."""

    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    REMOVED = "removed"


class StateChange(NamedTuple):
    """One transition; ``old`` is None the first time a node becomes known."""

    node_id: str
    old: NodeState | None
    new: NodeState


@dataclass(frozen=True)
class NodeView:
    """Snapshot of one known node."""

    node_id: str
    state: NodeState
    status: NodeStatus | None
    last_heartbeat_at: float | None
    changed_at: float
    conflict: str | None = None
    """Why two machines seem to use this node id (their statuses alternate addresses)."""


@dataclass
class _Node:
    node_id: str
    availability: str | None = None
    status: NodeStatus | None = None
    last_heartbeat_at: float | None = None
    removed: bool = False
    state: NodeState | None = None
    changed_at: float = 0.0
    # address -> when a status last came from it (kept for CONFLICT_WINDOW_S)
    addresses: dict[str, float] = field(default_factory=dict)
    last_address: str | None = None
    conflict: str | None = None
    conflict_until: float = 0.0


class PresenceTracker:
    """Tracks online → stale → offline, and removed, by the controller's receive clock.

    Not tied to MQTT: callers hand in decoded messages. Every mutating method
    re-evaluates all nodes at ``clock()`` and returns each state change exactly
    once; read-only methods evaluate too and keep their changes for the next
    mutating call, so no transition is lost or reported twice.
    """

    def __init__(
        self, clock: Callable[[], float], stale_after: float = STALE_AFTER_HEARTBEATS
    ) -> None:
        self._clock = clock
        self._stale_after = stale_after
        self._nodes: dict[str, _Node] = {}
        self._unreported: list[StateChange] = []
        self._lock = threading.Lock()

    def on_availability(self, node_id: str, payload: str) -> list[StateChange]:
        """Handle ``nodes/<id>/availability``: ``online``, ``offline`` or empty (cleared)."""
        value = payload.strip().lower()
        if value not in (ONLINE.decode(), OFFLINE.decode(), ""):
            logger.warning("ignoring availability %r from node %s", payload[:40], node_id)
            return self.tick()
        with self._lock:
            node = self._nodes.setdefault(node_id, _Node(node_id))
            node.availability = value or None
            return self._evaluate_and_drain()

    def on_status(
        self, node_id: str, status: NodeStatus | None, received_at: float | None = None
    ) -> list[StateChange]:
        """Handle ``nodes/<id>/status``; None means the retained status was cleared.

        A status is a heartbeat heard at ``received_at`` on the receiver's clock (default:
        now), never at the node's own ``sent_at``: a node whose clock is off is judged
        like any other.
        """
        if status is not None and status.node_id != node_id:
            logger.warning(
                "ignoring status naming node %s on the topic of node %s", status.node_id, node_id
            )
            return self.tick()
        with self._lock:
            node = self._nodes.setdefault(node_id, _Node(node_id))
            if status is None:
                node.removed = node.state is not None
                node.status = None
            else:
                node.removed = False
                node.status = status
                node.last_heartbeat_at = self._clock() if received_at is None else received_at
                self._note_address(node, status, node.last_heartbeat_at)
            return self._evaluate_and_drain()

    @staticmethod
    def _note_address(node: _Node, status: NodeStatus, at: float) -> None:
        """Two machines with one id alternate (A, B, A…); one that moved (A, B) does not."""
        address = f"{status.thrift.host}:{status.thrift.port}"
        known = {a: t for a, t in node.addresses.items() if at - t <= CONFLICT_WINDOW_S}
        if address != node.last_address and address in known:
            others = sorted(set(known) - {address})
            if node.conflict is None:
                logger.warning(
                    "node %s: statuses alternate between %s and %s: two machines use this id",
                    node.node_id,
                    address,
                    ", ".join(others),
                )
            node.conflict = (
                f"two machines use node id {node.node_id}: statuses alternate between "
                f"{', '.join(sorted(known))}; give each its own --node-id"
            )
            node.conflict_until = at + CONFLICT_WINDOW_S
        known[address] = at
        node.addresses = known
        node.last_address = address

    def tick(self) -> list[StateChange]:
        """Apply the passage of time (online → stale); return changes not yet reported."""
        with self._lock:
            return self._evaluate_and_drain()

    def nodes(self) -> list[NodeView]:
        """Every known node, sorted by id."""
        views = []
        now = self._clock()
        with self._lock:
            self._evaluate()
            for n in sorted(self._nodes.values(), key=lambda n: n.node_id):
                if n.state is not None:
                    views.append(
                        NodeView(
                            n.node_id,
                            n.state,
                            n.status,
                            n.last_heartbeat_at,
                            n.changed_at,
                            n.conflict if now < n.conflict_until else None,
                        )
                    )
        return views

    def node(self, node_id: str) -> NodeView | None:
        """One node's snapshot, or None if it is not known."""
        return next((v for v in self.nodes() if v.node_id == node_id), None)

    def online_ids(self) -> set[str]:
        """Ids of the nodes online now (fresh heartbeat, availability not offline)."""
        return {v.node_id for v in self.nodes() if v.state is NodeState.ONLINE}

    def _evaluate_and_drain(self) -> list[StateChange]:
        self._evaluate()
        changes, self._unreported = self._unreported, []
        return changes

    def _evaluate(self) -> None:
        now = self._clock()
        for node in self._nodes.values():
            new = self._derive(node, now)
            if new is not None and new != node.state:
                self._unreported.append(StateChange(node.node_id, node.state, new))
                logger.info("node %s: %s -> %s", node.node_id, node.state, new)
                node.state = new
                node.changed_at = now

    def _derive(self, node: _Node, now: float) -> NodeState | None:
        if node.removed:
            return NodeState.REMOVED
        if node.status is None or node.last_heartbeat_at is None:
            # Known only once a status has arrived; availability alone says too little.
            return None if node.state is None else node.state
        if node.availability == OFFLINE.decode():
            return NodeState.OFFLINE
        if now - node.last_heartbeat_at >= self._stale_after * node.status.heartbeat_s:
            return NodeState.STALE
        return NodeState.ONLINE
