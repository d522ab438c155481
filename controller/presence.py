"""Node presence: a pure state machine fed by availability and status messages."""

from __future__ import annotations

import heapq
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
    UNREACHABLE = "unreachable"
    """The node's site broker is cut off from ours (its bridge is down): the node may be fine,
    but no trigger reaches it and its retained ``online`` here is stale."""
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

    @property
    def site(self) -> str | None:
        """The site whose bridged broker the node uses (from its status), if any."""
        return self.status.site if self.status is not None else None


@dataclass
class _Bridge:
    """What the controller knows of one site's bridge (its notification topic)."""

    up: bool
    up_at: float | None = None
    """When it came back after being seen down; None if never seen down."""


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

    Not tied to MQTT: callers hand in decoded messages. Work per message is O(log N): a
    message re-judges only its own node, and the passage of time only the nodes whose
    staleness deadline (last heartbeat + ``stale_after`` heartbeat periods) has come, kept
    in a heap. Every mutating method returns each state change exactly once; read-only
    methods apply the passage of time too and keep their changes for the next mutating
    call, so no transition is lost or reported twice.
    """

    def __init__(
        self, clock: Callable[[], float], stale_after: float = STALE_AFTER_HEARTBEATS
    ) -> None:
        self._clock = clock
        self._stale_after = stale_after
        self._nodes: dict[str, _Node] = {}
        self._deadlines: list[tuple[float, str]] = []  # (stale deadline, node id), a heap
        self._states: dict[NodeState, set[str]] = {state: set() for state in NodeState}
        self._bridges: dict[str, _Bridge] = {}  # site -> its bridge's last known state
        self._site_nodes: dict[str, set[str]] = {}  # site -> nodes whose status names it
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
            return self._judge_and_drain(node)

    def on_bridge(
        self, site: str, payload: str, received_at: float | None = None
    ) -> list[StateChange]:
        """Handle ``sites/<site>/bridge``: ``1`` (up), ``0`` (down) or empty (cleared).

        mosquitto publishes it, retained, as the site bridge's notification topic; the
        central broker sets ``0`` as the bridge's will, so it also says when the link died.
        While it is down, the site's nodes are ``unreachable`` whatever their retained
        ``online`` says (mosquitto forwards no retained change made during the outage).
        When it is back, each waits for a heartbeat heard since then, for as long as it
        would take to turn stale, before it is ``online`` again.
        """
        value = payload.strip()
        if value not in ("0", "1", ""):
            logger.warning("ignoring bridge state %r of site %s", payload[:40], site)
            return self.tick()
        with self._lock:
            now = self._clock()
            heard = now if received_at is None else received_at
            old = self._bridges.get(site)
            if value == "":
                self._bridges.pop(site, None)
            elif value == "1":
                came_back = old is not None and not old.up
                up_at = heard if came_back else (old.up_at if old is not None else None)
                self._bridges[site] = _Bridge(True, up_at)
            else:
                self._bridges[site] = _Bridge(False)
            logger.info("site %s: bridge %s", site, {"1": "up", "0": "down"}.get(value, "unknown"))
            for node_id in self._site_nodes.get(site, set()):
                node = self._nodes[node_id]
                if value == "1" and node.last_heartbeat_at is not None:
                    heapq.heappush(self._deadlines, (self._deadline(node), node_id))
                self._judge(node, now)
            self._expire(now)
            return self._drain()

    def bridges(self) -> dict[str, bool]:
        """Each site whose bridge state is known: True while its bridge is up."""
        with self._lock:
            return {site: bridge.up for site, bridge in sorted(self._bridges.items())}

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
            self._note_site(node, status.site if status is not None else None)
            if status is None:
                node.removed = node.state is not None
                node.status = None
            else:
                node.removed = False
                node.status = status
                heard = self._clock() if received_at is None else received_at
                node.last_heartbeat_at = heard
                self._note_address(node, status, heard)
                heapq.heappush(self._deadlines, (self._deadline(node), node_id))
                if len(self._deadlines) > 4 * len(self._nodes) + 64:
                    self._compact()
            return self._judge_and_drain(node)

    def _note_site(self, node: _Node, site: str | None) -> None:
        old = node.status.site if node.status is not None else None
        if old == site:
            return
        if old is not None:
            self._site_nodes.get(old, set()).discard(node.node_id)
        if site is not None:
            self._site_nodes.setdefault(site, set()).add(node.node_id)

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
            self._expire(self._clock())
            return self._drain()

    def nodes(self) -> list[NodeView]:
        """Every known node, sorted by id."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            return [
                self._view(self._nodes[node_id], now)
                for node_id in sorted(self._nodes)
                if self._nodes[node_id].state is not None
            ]

    def node(self, node_id: str) -> NodeView | None:
        """One node's snapshot, or None if it is not known (O(1) but for due deadlines)."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            node = self._nodes.get(node_id)
            return None if node is None or node.state is None else self._view(node, now)

    def state_of(self, node_id: str) -> NodeState | None:
        """One node's state now, or None if it is not known."""
        with self._lock:
            self._expire(self._clock())
            node = self._nodes.get(node_id)
            return None if node is None else node.state

    def online_ids(self) -> set[str]:
        """Ids of the nodes online now (fresh heartbeat, availability not offline)."""
        with self._lock:
            self._expire(self._clock())
            return set(self._states[NodeState.ONLINE])

    def counts(self) -> dict[NodeState, int]:
        """How many known nodes are in each state now."""
        with self._lock:
            self._expire(self._clock())
            return {state: len(ids) for state, ids in self._states.items()}

    @staticmethod
    def _view(n: _Node, now: float) -> NodeView:
        assert n.state is not None
        conflict = n.conflict if now < n.conflict_until else None
        return NodeView(n.node_id, n.state, n.status, n.last_heartbeat_at, n.changed_at, conflict)

    def _deadline(self, node: _Node) -> float:
        """When the node turns stale without news: heartbeat periods after its last status,
        or after its site's bridge came back if that was later."""
        assert node.status is not None and node.last_heartbeat_at is not None
        since = node.last_heartbeat_at
        bridge = self._bridges.get(node.status.site) if node.status.site else None
        if bridge is not None and bridge.up_at is not None:
            since = max(since, bridge.up_at)
        return since + self._stale_after * node.status.heartbeat_s

    def _compact(self) -> None:
        """One deadline per node: statuses far more often than their period left many."""
        self._deadlines = [
            (self._deadline(n), n.node_id)
            for n in self._nodes.values()
            if n.status is not None and n.last_heartbeat_at is not None
        ]
        heapq.heapify(self._deadlines)

    def _judge_and_drain(self, node: _Node) -> list[StateChange]:
        now = self._clock()
        self._judge(node, now)
        self._expire(now)
        return self._drain()

    def _drain(self) -> list[StateChange]:
        changes, self._unreported = self._unreported, []
        return changes

    def _expire(self, now: float) -> None:
        """Re-judge the nodes whose staleness deadline has come (each heartbeat left one)."""
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, node_id = heapq.heappop(heap)
            node = self._nodes.get(node_id)
            if node is not None:
                self._judge(node, now)

    def _judge(self, node: _Node, now: float) -> None:
        new = self._derive(node, now)
        if new is None or new == node.state:
            return
        self._unreported.append(StateChange(node.node_id, node.state, new))
        logger.info("node %s: %s -> %s", node.node_id, node.state, new)
        if node.state is not None:
            self._states[node.state].discard(node.node_id)
        self._states[new].add(node.node_id)
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
        stale_after = self._stale_after * node.status.heartbeat_s
        bridge = self._bridges.get(node.status.site) if node.status.site else None
        if bridge is not None:
            if not bridge.up:
                return NodeState.UNREACHABLE
            if bridge.up_at is not None and node.last_heartbeat_at < bridge.up_at:
                # nothing heard from it since its site came back: not yet online, not yet stale
                return (
                    NodeState.UNREACHABLE if now - bridge.up_at < stale_after else NodeState.STALE
                )
        if now - node.last_heartbeat_at >= stale_after:
            return NodeState.STALE
        return NodeState.ONLINE
