"""What the page's event stream sends of each node: first everything, then only changes."""

from __future__ import annotations

from typing import Any

from pepi_fleet.controller.web.node_diffs import NodeDiffer


def node(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node_id": "cam01",
        "state": "online",
        "host": "10.0.0.1",
        "last_heartbeat_at": 100.0,
        "heartbeat_age_s": 0.2,
        "clock_offset_s": None,
        "health": "ok",
    }
    return {**base, **over}


def test_node_differ_first_flush_sends_every_shown_field_but_the_age() -> None:
    differ = NodeDiffer()
    differ.mark("cam01")
    changed, removed = differ.flush(lambda _id: node(), now=0.0)
    assert removed == []
    assert changed == [
        {
            "node_id": "cam01",
            "state": "online",
            "host": "10.0.0.1",
            "last_heartbeat_at": 100.0,
            "clock_offset_s": None,
            "health": "ok",
        }
    ]
    assert not differ.pending


def test_node_differ_sends_only_changed_fields_and_nothing_for_no_change() -> None:
    differ = NodeDiffer()
    differ.mark("cam01")
    differ.flush(lambda _id: node(), now=0.0)
    differ.mark("cam01")
    assert differ.flush(lambda _id: node(heartbeat_age_s=9.0), now=1.0) == ([], [])
    differ.mark("cam01")
    changed, _ = differ.flush(lambda _id: node(state="stale", health="degraded: x"), now=2.0)
    assert changed == [{"node_id": "cam01", "state": "stale", "health": "degraded: x"}]


def test_node_differ_holds_heartbeat_only_changes_until_quiet_period() -> None:
    differ = NodeDiffer(quiet_s=5.0)
    differ.mark("cam01")
    differ.flush(lambda _id: node(), now=0.0)
    differ.mark("cam01")
    assert differ.flush(lambda _id: node(last_heartbeat_at=102.0), now=1.0) == ([], [])
    assert differ.pending  # kept for later, not forgotten
    assert differ.flush(lambda _id: node(last_heartbeat_at=104.0), now=3.0) == ([], [])
    changed, _ = differ.flush(lambda _id: node(last_heartbeat_at=106.0), now=5.5)
    assert changed == [{"node_id": "cam01", "last_heartbeat_at": 106.0}]
    assert not differ.pending


def test_node_differ_sends_a_clock_offset_at_once_when_it_first_appears() -> None:
    differ = NodeDiffer(quiet_s=5.0)
    differ.mark("cam01")
    differ.flush(lambda _id: node(), now=0.0)
    differ.mark("cam01")
    changed, _ = differ.flush(lambda _id: node(clock_offset_s=0.002), now=0.5)
    assert changed == [{"node_id": "cam01", "clock_offset_s": 0.002}]
    differ.mark("cam01")
    assert differ.flush(lambda _id: node(clock_offset_s=0.003), now=1.0) == ([], [])


def test_node_differ_reports_a_node_gone_from_the_controller_as_removed() -> None:
    differ = NodeDiffer()
    differ.mark("cam01")
    differ.mark("ghost")
    changed, removed = differ.flush(lambda i: node() if i == "cam01" else None, now=0.0)
    assert [c["node_id"] for c in changed] == ["cam01"]
    assert removed == ["ghost"]


def test_node_differ_looks_a_held_node_up_again_only_when_marked_or_due() -> None:
    differ = NodeDiffer(quiet_s=5.0)
    looked: list[float] = []

    def lookup(_id: str) -> dict[str, Any]:
        looked.append(now)
        return node(last_heartbeat_at=100.0 + now)

    now = 0.0
    differ.mark("cam01")
    differ.flush(lookup, now)
    now = 1.0
    differ.mark("cam01")
    assert differ.flush(lookup, now) == ([], [])
    for now in (1.5, 2.0, 4.5):  # a 1000-node fleet must not cost a lookup per node per flush
        differ.flush(lookup, now)
    now = 5.0
    changed, _ = differ.flush(lookup, now)
    assert changed == [{"node_id": "cam01", "last_heartbeat_at": 105.0}]
    assert looked == [0.0, 1.0, 5.0]


def camera(**controls: Any) -> dict[str, Any]:
    auto = {
        "exposure_time_us": 20000,
        "analogue_gain": 1.2,
        "colour_gains": [1.8, 1.9],
        "colour_temperature_k": 4000,
        "frame_duration_us": 33333,
        "auto_exposure": True,
        "auto_white_balance": True,
    }
    return {"index": 0, "model": "synthetic", "controls": {**auto, **controls}}


def test_node_differ_sends_a_settings_change_of_the_cameras_at_once() -> None:
    differ = NodeDiffer(quiet_s=5.0)
    differ.mark("cam01")
    differ.flush(lambda _id: node(cameras=[camera()]), now=0.0)
    manual = camera(
        exposure_time_us=8000, analogue_gain=2.0, colour_gains=[1.9, 1.6], auto_exposure=False
    )
    manual["controls"]["auto_white_balance"] = False
    differ.mark("cam01")
    changed, _ = differ.flush(lambda _id: node(cameras=[manual]), now=0.5)
    assert changed == [{"node_id": "cam01", "cameras": [manual]}]
    # a new fixed exposure while already manual: sent at once too
    shorter = {**manual, "controls": {**manual["controls"], "exposure_time_us": 4000}}
    differ.mark("cam01")
    changed, _ = differ.flush(lambda _id: node(cameras=[shorter]), now=1.0)
    assert changed[0]["cameras"][0]["controls"]["exposure_time_us"] == 4000


def test_node_differ_holds_readings_that_auto_exposure_moves_by_itself() -> None:
    differ = NodeDiffer(quiet_s=5.0)
    differ.mark("cam01")
    differ.flush(lambda _id: node(cameras=[camera()]), now=0.0)
    drifted = camera(exposure_time_us=21000, colour_gains=[1.81, 1.9], frame_duration_us=33334)
    differ.mark("cam01")
    assert differ.flush(lambda _id: node(cameras=[drifted]), now=1.0) == ([], [])
    assert differ.pending
    changed, _ = differ.flush(lambda _id: node(cameras=[drifted]), now=5.5)
    assert changed == [{"node_id": "cam01", "cameras": [drifted]}]
