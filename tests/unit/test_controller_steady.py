"""The controller's steady traffic (heartbeats, clock pongs) is handled in batches, in order."""

from __future__ import annotations

import time

from support.controller_rig import Rig, no_broker, rig, status

from pepi_fleet.controller.service import TICK_S
from pepi_fleet.schemas import CaptureResult

__all__ = ["no_broker", "rig"]  # fixtures

HEARTBEAT_S = 1.0  # stale after 3 s without a status


def test_controller_batched_heartbeat_keeps_its_node_online_by_its_receipt_time(rig: Rig) -> None:
    beat = status("cam1", rig.clock(), HEARTBEAT_S).model_dump_json()
    rig.send(rig.topics.status("cam1"), beat)
    first = rig.wait(lambda e: e["type"] == "presence" and e["node_id"] == "cam1")
    assert first["state"] == "online"
    rig.settle()  # the worker is done with that heartbeat

    # A heartbeat heard at 2.9 s waits for the worker's next wake-up; by then the clock has
    # passed the first one's deadline (3 s). Judged by when it arrived, the node is online.
    rig.clock.advance(2.9)
    rig.send(rig.topics.status("cam1"), beat)
    rig.clock.advance(0.6)
    time.sleep(2 * TICK_S)  # let the worker tick at this time (there is no event to wait on)
    assert not [e for e in rig.settle() if e["type"] == "presence"]
    assert rig.controller.node("cam1").state == "online"  # type: ignore[union-attr]

    # Nothing heard for 3 s after the second heartbeat: stale, once.
    rig.clock.advance(2.5)
    stale = rig.wait(lambda e: e["type"] == "presence" and e["node_id"] == "cam1")
    assert (stale["old"], stale["state"]) == ("online", "stale")


def test_controller_batched_heartbeat_is_handled_before_a_later_message(rig: Rig) -> None:
    # A node's first status (batched), then at once a result (handled on arrival): the node
    # is known, online, when its result is, in the order the two arrived.
    rig.send(rig.topics.status("cam2"), status("cam2", rig.clock()).model_dump_json())
    marker = CaptureResult(
        node_id="cam2", capture_id=None, status="error", received_at=rig.clock(), error="x"
    )
    rig.send(rig.topics.result("cam2"), marker.model_dump_json())
    kinds = [
        e["type"]
        for e in (rig.wait(lambda e: e["type"] in ("presence", "result")) for _ in range(2))
    ]
    assert kinds == ["presence", "result"]
