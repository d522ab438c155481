"""What ``pepi nodes`` and ``GET /api/nodes`` report about each node: one model, one set of units.

Built from a ``PresenceTracker``'s snapshots and the clock estimates of whoever reports
(the controller, or the one-shot CLI session), so both say the same about a node.
Plain pydantic: the CLI imports it without loading the web stack.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pepi_fleet.controller.clock_probe import ClockEstimate
from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.schemas.status import CameraInfo, ClockInfo, StoreInfo


class NodeOut(BaseModel):
    """One node as the reporter (the controller; for ``pepi nodes``, its session) sees it now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    state: NodeState
    address: str | None = Field(description="host:port of the node's Thrift CameraServer")
    host: str | None
    version: str | None
    cameras: list[CameraInfo]
    stream_urls: list[str] = Field(description="MJPEG preview streams, one per camera")
    store: StoreInfo | None
    clock: ClockInfo | None
    clock_offset_s: float | None = Field(
        description="node clock minus the reporter's clock (s): measured over MQTT, "
        "else the node's own estimate"
    )
    clock_rtt_s: float | None = Field(description="round trip of the best clock probe")
    heartbeat_s: float | None
    last_heartbeat_at: float | None = Field(
        description="when the last status arrived, on the reporter's clock (Unix s)"
    )
    heartbeat_age_s: float | None = Field(
        description="seconds since last_heartbeat_at; stale from 3 x heartbeat_s"
    )
    changed_at: float = Field(description="when the state last changed (Unix s)")
    health: str | None = Field(
        default=None, description="the node's own verdict: 'ok' or 'degraded: <reason>'"
    )
    jpeg_quality: int | None = Field(default=None, description="JPEG quality the node applies")
    conflict: str | None = Field(
        default=None, description="set when two machines seem to use this node id"
    )
    site: str | None = Field(
        default=None,
        description="the site whose bridged broker the node uses; 'unreachable' while that "
        "site's bridge is down",
    )

    @classmethod
    def of(cls, view: NodeView, now: float, measured: ClockEstimate | None = None) -> NodeOut:
        """The report of a presence snapshot and the reporter's clock estimate for the node."""
        status = view.status
        last = view.last_heartbeat_at
        own = status.clock.offset_estimate_s if status else None
        return cls(
            node_id=view.node_id,
            state=view.state,
            address=f"{status.thrift.host}:{status.thrift.port}" if status else None,
            host=status.thrift.host if status else None,
            version=status.version if status else None,
            cameras=list(status.cameras) if status else [],
            stream_urls=list(status.stream_urls) if status else [],
            store=status.store if status else None,
            clock=status.clock if status else None,
            clock_offset_s=measured.offset_s if measured else own,
            clock_rtt_s=measured.rtt_s if measured else None,
            heartbeat_s=status.heartbeat_s if status else None,
            last_heartbeat_at=last,
            heartbeat_age_s=None if last is None else max(now - last, 0.0),
            changed_at=view.changed_at,
            health=status.health if status else None,
            jpeg_quality=status.jpeg_quality if status else None,
            conflict=view.conflict,
            site=view.site,
        )


class NodeCounts(BaseModel):
    """How many nodes are in each state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    online: int = 0
    stale: int = 0
    offline: int = 0
    unreachable: int = 0
    removed: int = 0


class FleetOut(BaseModel):
    """``GET /api/nodes``: the broker link, per-state counts and every known node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker_connected: bool
    counts: NodeCounts
    nodes: list[NodeOut]
    sites: dict[str, bool] = Field(
        default_factory=dict,
        description="each bridged site whose bridge state is known: true while it is up",
    )

    @classmethod
    def of(
        cls,
        views: list[NodeView],
        broker_connected: bool,
        now: float,
        clock_of: Callable[[str], ClockEstimate | None],
        sites: dict[str, bool] | None = None,
    ) -> FleetOut:
        """Build from presence snapshots, the reporter's clock estimates and the sites'
        bridge states."""
        counts = {s.value: 0 for s in NodeState}
        for view in views:
            counts[view.state.value] += 1
        return cls(
            broker_connected=broker_connected,
            counts=NodeCounts(**counts),
            nodes=node_reports(views, now, clock_of),
            sites=sites or {},
        )


def node_reports(
    views: list[NodeView], now: float, clock_of: Callable[[str], ClockEstimate | None]
) -> list[NodeOut]:
    """One report per presence snapshot: the nodes of ``GET /api/nodes`` and ``pepi nodes``."""
    return [NodeOut.of(view, now, clock_of(view.node_id)) for view in views]


NODE_LIST = TypeAdapter(list[NodeOut])
"""``pepi nodes --json``: the ``nodes`` of ``GET /api/nodes`` as a JSON list."""
