"""Presence across bridged site brokers: a site's nodes are unreachable while its bridge is down."""

from __future__ import annotations

from support.clock import ManualClock
from test_presence import status

from pepi_fleet.controller.presence import NodeState, PresenceTracker, StateChange
from pepi_fleet.schemas import NodeStatus


def site_status(node_id: str, site: str | None, heartbeat_s: float = 5.0) -> NodeStatus:
    return status(node_id, heartbeat_s).model_copy(update={"site": site})


def fleet(clock: ManualClock) -> PresenceTracker:
    """n1 and n2 on site north, n3 on site south, c1 on the central broker; all online."""
    tracker = PresenceTracker(clock)
    tracker.on_bridge("north", "1")
    tracker.on_bridge("south", "1")
    for node_id, site in (("n1", "north"), ("n2", "north"), ("n3", "south"), ("c1", None)):
        tracker.on_availability(node_id, "online")
        tracker.on_status(node_id, site_status(node_id, site))
    return tracker


def states(tracker: PresenceTracker) -> dict[str, NodeState]:
    return {view.node_id: view.state for view in tracker.nodes()}


def test_presence_bridge_down_makes_only_that_sites_nodes_unreachable() -> None:
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    clock.now += 1
    changes = tracker.on_bridge("north", "0")
    assert sorted(changes) == [
        StateChange("n1", NodeState.ONLINE, NodeState.UNREACHABLE),
        StateChange("n2", NodeState.ONLINE, NodeState.UNREACHABLE),
    ]
    assert tracker.online_ids() == {"n3", "c1"}
    assert tracker.bridges() == {"north": False, "south": True}
    # the outage outlasts the heartbeats: the nodes stay unreachable, not stale
    clock.now += 60
    tracker.on_status("c1", site_status("c1", None))
    tracker.on_status("n3", site_status("n3", "south"))
    assert states(tracker) == {
        "c1": NodeState.ONLINE,
        "n1": NodeState.UNREACHABLE,
        "n2": NodeState.UNREACHABLE,
        "n3": NodeState.ONLINE,
    }


def test_presence_bridge_back_waits_for_a_fresh_heartbeat_then_online() -> None:
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_bridge("north", "0")
    clock.now += 60
    back = tracker.on_bridge("north", "1")
    assert {c.node_id for c in back} == {"c1", "n3"}  # silent for 60 s: stale; north: not yet
    assert {c.new for c in back} == {NodeState.STALE}
    clock.now += 1
    changes = tracker.on_status("n1", site_status("n1", "north"))
    assert changes == [StateChange("n1", NodeState.UNREACHABLE, NodeState.ONLINE)]
    # n2 never speaks again: stale once the bridge has been back for 3 heartbeats
    clock.now += 13.9
    assert tracker.tick() == []
    clock.now += 0.1
    assert tracker.tick() == [StateChange("n2", NodeState.UNREACHABLE, NodeState.STALE)]


def test_presence_retained_state_forwarded_on_reconnect_counts() -> None:
    """mosquitto re-sends a site's retained messages when its bridge reconnects: an
    ``offline`` the node's will left during the outage arrives then."""
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_bridge("north", "0")
    clock.now += 30
    tracker.on_bridge("north", "1")
    changes = tracker.on_availability("n2", "offline")
    assert changes == [StateChange("n2", NodeState.UNREACHABLE, NodeState.OFFLINE)]


def test_presence_offline_node_stays_offline_when_its_bridge_drops() -> None:
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_availability("n2", "offline")
    assert tracker.on_bridge("north", "0") == [
        StateChange("n1", NodeState.ONLINE, NodeState.UNREACHABLE)
    ]


def test_presence_controller_starting_during_an_outage_trusts_no_retained_online() -> None:
    """A controller (re)started while the bridge is down reads the retained ``0`` and the
    site's last retained statuses: the nodes are unreachable, whatever order they come in."""
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("n1", site_status("n1", "north"))
    tracker.on_bridge("north", "0")
    tracker.on_status("n2", site_status("n2", "north"))
    assert states(tracker) == {"n1": NodeState.UNREACHABLE, "n2": NodeState.UNREACHABLE}


def test_presence_first_bridge_up_seen_needs_no_fresh_heartbeat() -> None:
    """A bridge never seen down (the retained ``1`` at start-up) holds nobody back."""
    clock = ManualClock(1000.0)
    tracker = PresenceTracker(clock)
    tracker.on_status("n1", site_status("n1", "north"))
    clock.now += 1
    assert tracker.on_bridge("north", "1") == []
    assert states(tracker) == {"n1": NodeState.ONLINE}


def test_presence_node_that_moves_site_follows_its_new_bridge() -> None:
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_status("n1", site_status("n1", "south"))
    changes = tracker.on_bridge("north", "0")
    assert changes == [StateChange("n2", NodeState.ONLINE, NodeState.UNREACHABLE)]
    assert sorted(tracker.on_bridge("south", "0")) == [
        StateChange("n1", NodeState.ONLINE, NodeState.UNREACHABLE),
        StateChange("n3", NodeState.ONLINE, NodeState.UNREACHABLE),
    ]


def test_presence_cleared_or_bad_bridge_state() -> None:
    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_bridge("north", "0")
    assert tracker.on_bridge("north", "maybe") == []  # ignored, with a warning
    assert tracker.bridges()["north"] is False
    # cleared (the site was retired): its nodes are judged by their heartbeats alone
    changes = tracker.on_bridge("north", "")
    assert sorted(changes) == [
        StateChange("n1", NodeState.UNREACHABLE, NodeState.ONLINE),
        StateChange("n2", NodeState.UNREACHABLE, NodeState.ONLINE),
    ]
    assert "north" not in tracker.bridges()


def test_presence_one_shot_reader_sees_a_site_down() -> None:
    """``pepi nodes`` reads the retained bridge state as the controller does."""
    from pepi_fleet.controller.presence_feed import presence_subscriptions, tracker_from_messages
    from pepi_fleet.core.mqtt_link import InboundMessage
    from pepi_fleet.schemas.topics import Topics

    topics = Topics()
    assert presence_subscriptions(topics)[0] == "pepi/v1/sites/+/bridge"
    messages = [
        InboundMessage(topics.site_bridge("north"), b"0", True, 1000.0),
        InboundMessage(topics.availability("n1"), b"online", True, 1000.0),
        InboundMessage(
            topics.status("n1"), site_status("n1", "north").model_dump_json().encode(), True, 1000.0
        ),
        InboundMessage(
            topics.status("c1"), site_status("c1", None).model_dump_json().encode(), True, 1000.0
        ),
        InboundMessage(topics.site_bridge("south"), b"x" * 100, True, 1000.0),  # ignored
    ]
    tracker = tracker_from_messages(topics, messages, ManualClock(1000.0))
    assert states(tracker) == {"c1": NodeState.ONLINE, "n1": NodeState.UNREACHABLE}
    assert tracker.bridges() == {"north": False}


def test_presence_unreachable_in_reports() -> None:
    """(The page's card for it is built in the browser: tests/system/test_web_fleet_page.py.)"""
    from pepi_fleet.controller.node_report import FleetOut

    clock = ManualClock(1000.0)
    tracker = fleet(clock)
    tracker.on_bridge("north", "0")
    out = FleetOut.of(tracker.nodes(), True, clock.now, lambda _n: None, tracker.bridges())
    assert out.counts.unreachable == 2 and out.counts.online == 2
    assert out.sites == {"north": False, "south": True}
    n1 = next(n for n in out.nodes if n.node_id == "n1")
    assert (n1.state, n1.site) == (NodeState.UNREACHABLE, "north")
