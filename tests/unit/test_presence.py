"""Presence tracker: online, stale, offline, removed by the controller's receive clock."""

from __future__ import annotations

from support.clock import ManualClock
from support.controller_rig import status as rig_status

from pepi_fleet.controller.presence import NodeState, PresenceTracker, StateChange
from pepi_fleet.schemas import NodeStatus


def status(node_id: str, heartbeat_s: float = 5.0, sent_at: float = 0.0) -> NodeStatus:
    return rig_status(node_id, sent_at, heartbeat_s)


def test_presence_new_node_known_when_retained_status_arrives() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    assert tracker.on_availability("n1", "online") == []
    assert tracker.nodes() == []
    changes = tracker.on_status("n1", status("n1"))
    assert changes == [StateChange("n1", None, NodeState.ONLINE)]
    [view] = tracker.nodes()
    assert view.state is NodeState.ONLINE
    assert view.status == status("n1")
    assert view.last_heartbeat_at == 1000.0
    assert tracker.online_ids() == {"n1"}


def test_presence_status_alone_makes_node_online() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    assert tracker.on_status("n1", status("n1")) == [StateChange("n1", None, NodeState.ONLINE)]


def test_presence_goes_stale_after_three_heartbeats_despite_retained_online() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_availability("n1", "online")
    tracker.on_status("n1", status("n1", heartbeat_s=5.0))
    clock.now += 14.9
    assert tracker.tick() == []
    clock.now += 0.1
    assert tracker.tick() == [StateChange("n1", NodeState.ONLINE, NodeState.STALE)]
    assert tracker.tick() == []
    assert tracker.online_ids() == set()
    [view] = tracker.nodes()
    assert view.changed_at == 1015.0


def test_presence_stale_uses_receive_clock_not_sent_at() -> None:
    clock = ManualClock(5000.0)
    tracker = PresenceTracker(clock)
    # A node whose own clock is far behind still counts as fresh when its status arrives.
    tracker.on_status("n1", status("n1", heartbeat_s=2.0, sent_at=10.0))
    assert tracker.online_ids() == {"n1"}


def test_presence_heartbeat_is_timed_by_when_it_arrived() -> None:
    clock = ManualClock(5000.0)
    tracker = PresenceTracker(clock)
    # Handed in later than it arrived (a one-shot session reads first, judges after):
    # 3 heartbeats after its arrival it is stale, whatever the node's clock said.
    tracker.on_status("n1", status("n1", heartbeat_s=2.0, sent_at=5000.0), received_at=4994.0)
    tracker.on_status("n2", status("n2", heartbeat_s=2.0, sent_at=10.0), received_at=4994.1)
    views = {v.node_id: v for v in tracker.nodes()}
    assert views["n1"].state is NodeState.STALE and views["n1"].last_heartbeat_at == 4994.0
    assert views["n2"].state is NodeState.ONLINE


def test_presence_heartbeat_brings_stale_node_back_online() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("n1", status("n1", heartbeat_s=1.0))
    clock.now += 10
    tracker.tick()
    changes = tracker.on_status("n1", status("n1", heartbeat_s=1.0))
    assert changes == [StateChange("n1", NodeState.STALE, NodeState.ONLINE)]


def test_presence_last_will_offline_and_reconnect() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("n1", status("n1"))
    changes = tracker.on_availability("n1", "offline")
    assert changes == [StateChange("n1", NodeState.ONLINE, NodeState.OFFLINE)]
    clock.now += 100
    assert tracker.tick() == []  # offline does not decay into stale
    # The node reconnects: online first, then a fresh status.
    assert tracker.on_availability("n1", "online") == [
        StateChange("n1", NodeState.OFFLINE, NodeState.STALE)
    ]
    assert tracker.on_status("n1", status("n1")) == [
        StateChange("n1", NodeState.STALE, NodeState.ONLINE)
    ]


def test_presence_retained_offline_before_status_stays_offline() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    tracker.on_availability("n1", "offline")
    assert tracker.on_status("n1", status("n1")) == [StateChange("n1", None, NodeState.OFFLINE)]
    assert tracker.online_ids() == set()


def test_presence_cleared_status_removes_node() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    tracker.on_status("n1", status("n1"))
    changes = tracker.on_status("n1", None)
    assert changes == [StateChange("n1", NodeState.ONLINE, NodeState.REMOVED)]
    [view] = tracker.nodes()
    assert view.state is NodeState.REMOVED
    assert view.status is None
    assert tracker.on_availability("n1", "offline") == []
    assert tracker.online_ids() == set()


def test_presence_removed_node_returns_with_new_status() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    tracker.on_status("n1", status("n1"))
    tracker.on_status("n1", None)
    assert tracker.on_status("n1", status("n1")) == [
        StateChange("n1", NodeState.REMOVED, NodeState.ONLINE)
    ]


def test_presence_clearing_unknown_node_is_ignored() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    assert tracker.on_status("ghost", None) == []
    assert tracker.nodes() == []


def test_presence_ignores_bad_availability_and_mismatched_status() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    tracker.on_status("n1", status("n1"))
    assert tracker.on_availability("n1", "maybe") == []
    assert tracker.on_status("n2", status("n1")) == []
    assert [v.node_id for v in tracker.nodes()] == ["n1"]
    assert tracker.online_ids() == {"n1"}


def test_presence_query_does_not_swallow_changes() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("n1", status("n1", heartbeat_s=1.0))
    clock.now += 5
    assert tracker.online_ids() == set()  # the query sees the stale node at once...
    # ...and the transition is still reported exactly once to the next caller.
    assert tracker.tick() == [StateChange("n1", NodeState.ONLINE, NodeState.STALE)]
    assert tracker.tick() == []


def test_presence_keeps_last_status_per_node() -> None:
    tracker = PresenceTracker(ManualClock(1000.0))
    tracker.on_status("n1", status("n1", sent_at=1.0))
    tracker.on_status("n2", status("n2"))
    tracker.on_status("n1", status("n1", sent_at=2.0))
    views = {v.node_id: v for v in tracker.nodes()}
    assert [v.node_id for v in tracker.nodes()] == ["n1", "n2"]
    assert views["n1"].status is not None
    assert views["n1"].status.sent_at == 2.0
    assert tracker.node("n2") is not None
    assert tracker.node("n3") is None


def _from(node_id: str, host: str) -> NodeStatus:
    data = status(node_id).model_dump()
    data["thrift"]["host"] = host
    return NodeStatus.model_validate(data)


def test_presence_two_machines_with_one_id_are_flagged_a_moved_node_is_not() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    for host in ("10.0.0.5", "10.0.0.9"):  # moved once (a new DHCP lease): no conflict
        tracker.on_status("cam1", _from("cam1", host))
        clock.now += 1
    view = tracker.node("cam1")
    assert view is not None and view.conflict is None
    tracker.on_status("cam1", _from("cam1", "10.0.0.5"))  # and back: two machines
    view = tracker.node("cam1")
    assert view is not None and view.conflict is not None
    assert "10.0.0.5" in view.conflict and "10.0.0.9" in view.conflict
    clock.now += 120  # the clash ended a while ago
    tracker.on_status("cam1", _from("cam1", "10.0.0.5"))
    view = tracker.node("cam1")
    assert view is not None and view.conflict is None


def test_presence_report_carries_the_nodes_health() -> None:
    from pepi_fleet.controller.node_report import NodeOut

    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("cam1", status("cam1").model_copy(update={"health": "degraded: camera"}))
    view = tracker.node("cam1")
    assert view is not None
    assert NodeOut.of(view, clock.now).health == "degraded: camera"


def test_presence_each_node_goes_stale_at_its_own_deadline() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("fast", status("fast", heartbeat_s=1.0))
    tracker.on_status("slow", status("slow", heartbeat_s=10.0))
    clock.now += 2
    tracker.on_status("fast", status("fast", heartbeat_s=1.0))  # renewed: its old deadline passes
    clock.now += 1.5
    assert tracker.tick() == []
    clock.now += 1.5
    assert tracker.tick() == [StateChange("fast", NodeState.ONLINE, NodeState.STALE)]
    clock.now += 25
    assert tracker.tick() == [StateChange("slow", NodeState.ONLINE, NodeState.STALE)]
    assert tracker.counts()[NodeState.STALE] == 2 and tracker.online_ids() == set()


def test_presence_thousand_nodes_heartbeats_stay_online_and_counted() -> None:
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    ids = [f"n{i:04d}" for i in range(1000)]
    for round_ in range(5):  # every node beats every 5 s, phases spread over the period
        for i, node_id in enumerate(ids):
            clock.now = 1000.0 + round_ * 5.0 + i * 0.005
            changes = tracker.on_status(node_id, status(node_id))
            assert changes == (
                [StateChange(node_id, None, NodeState.ONLINE)] if round_ == 0 else []
            )
    assert tracker.counts()[NodeState.ONLINE] == 1000
    assert tracker.state_of("n0500") is NodeState.ONLINE and tracker.state_of("x") is None
    view = tracker.node("n0999")
    assert view is not None and view.state is NodeState.ONLINE
    clock.now += 15.0  # three periods after the last round: all of them, once each
    changes = tracker.tick()
    assert sorted(c.node_id for c in changes) == ids
    assert tracker.tick() == [] and tracker.counts()[NodeState.STALE] == 1000
