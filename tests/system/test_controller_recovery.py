"""Controller recovery: captures it never heard of, PEPI re-captures, corrupt transfers."""

from __future__ import annotations

import hashlib
import time

import pytest
from conftest import StartCam1
from support.controllers import (
    assert_set_on_disk,
    ledger_states,
    restart,
    wait_store_empty,
    wait_summary,
    wait_until,
)
from support.expect import wait_result
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess
from support.pub import mosquitto_pub
from support.thrift_clients import camera_server, fleet_server

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.downloader import LISTEN_MARGIN_S
from pepi_fleet.schemas import CaptureResult, CaptureStatus

pytestmark = pytest.mark.system


def held_ids(node: NodeProcess) -> set[str]:
    with fleet_server(node.thrift_port, node.data_dir) as server:
        return {c.capture_id for c in server.list_captures()}


def test_controller_recovers_captures_taken_while_it_was_down(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    node, ctl = start_cam1()
    ctl.stop()  # a clean MQTT session: the broker queues nothing for it while it is away

    mosquitto_pub(broker.port, f"{root}/capture", "while-down")
    mosquitto_pub(broker.port, f"{root}/capture", "")  # an id-less trigger too
    explicit = wait_result(watcher, root, "cam1", "while-down", CaptureStatus.OK)
    auto = CaptureResult.model_validate_json(
        watcher.wait_for(
            lambda seen: seen.topic == f"{root}/nodes/cam1/result" and b'"auto-' in seen.payload,
            what="the id-less capture's result",
        ).payload
    )
    assert auto.status is CaptureStatus.OK

    # Captures fired before the controller's MQTT session began are taken from the node at
    # once (a later one may still have its result on the way, and waits for a while).
    time.sleep(max(0.0, auto.fired_at + LISTEN_MARGIN_S - time.time()))  # type: ignore[operator]
    restarted_at = time.time()
    restart(ctl, watcher)
    for result in (explicit, auto):
        assert result.capture_id is not None
        summary = wait_summary(watcher, root, result.capture_id, timeout=30, downloaded=True)
        assert summary.downloaded and len(summary.files) == 1
        assert_set_on_disk(ctl.data_dir, result.capture_id, [result])
    wait_store_empty(watcher, root, node, after=restarted_at)


def test_controller_keeps_pepi_captures_until_the_hold_and_follows_a_recapture(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    node, ctl = start_cam1("--thrift-hold", "8")

    with camera_server(node.thrift_port) as pepi:
        pepi.start_capture("1")
    first = wait_result(watcher, root, "cam1", "1", CaptureStatus.OK)
    assert first.source == "thrift"
    wait_until(lambda: ledger_states(ctl).get(("1", "cam1", 0)) == "done", "set 1 downloaded")

    # The controller has its copy; PEPI's client still finds its capture by code...
    with camera_server(node.thrift_port) as pepi:
        (jpeg,) = pepi.retrieve_stills_jpg("1")
    assert hashlib.sha256(jpeg).hexdigest() == first.frames[0].sha256
    # ...and, numbering from 1 again after a restart, takes another under the same code:
    # the node keeps the first one renamed aside.
    with camera_server(node.thrift_port) as pepi:
        pepi.start_capture("1")
    second = CaptureResult.model_validate_json(
        watcher.wait_for(
            lambda seen: (
                seen.topic == f"{root}/nodes/cam1/result"
                and CaptureResult.model_validate_json(seen.payload).received_at > first.received_at
            ),
            what="the re-capture's result",
        ).payload
    )
    assert second.capture_id == "1" and second.status is CaptureStatus.OK
    assert second.frames != first.frames
    wait_until(lambda: ledger_states(ctl).get(("1-2", "cam1", 0)) == "done", "set 1-2 downloaded")
    assert held_ids(node) == {"1", "1.r1"}
    # A restarted controller reconciles with what the node holds: it recognises "1.r1"
    # by its content as set 1's capture, not as a new one.
    ctl.stop()
    restart(ctl, watcher)
    ctl.wait_log("node cam1: None -> online")

    # After the hold the controller releases both, each by its content, not by the code.
    wait_store_empty(watcher, root, node, after=time.time())
    assert_set_on_disk(ctl.data_dir, "1", [first])
    assert_set_on_disk(ctl.data_dir, "1-2", [second])
    assert sorted(p.name for p in ctl.data_dir.iterdir() if p.is_dir()) == ["1", "1-2"]


def test_controller_retries_a_corrupt_transfer_until_verified(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    node, ctl = start_cam1()

    ctl.freeze()
    try:
        mosquitto_pub(broker.port, f"{root}/capture", "bad")
        result = wait_result(watcher, root, "cam1", "bad", CaptureStatus.OK)
        stored = node.data_dir / "captures" / "bad" / "cam0.jpeg"
        good = stored.read_bytes()
        stored.write_bytes(good[:-100] + bytes(100))  # the node's disk corrupts the tail
    finally:
        ctl.thaw()

    wait_until(lambda: ledger_states(ctl).get(("bad", "cam1", 0)) == "failed", "fetch failed")
    time.sleep(0.5)  # a wrong retry would write the file now: give it the chance
    assert ledger_states(ctl)[("bad", "cam1", 0)] != "done"
    assert list(ctl.data_dir.glob("bad/*.jpeg")) == []
    assert "bad" in held_ids(node)  # nothing released

    repaired_at = time.time()
    stored.write_bytes(good)
    summary = wait_summary(watcher, root, "bad", timeout=40, downloaded=True)
    assert summary.downloaded
    assert_set_on_disk(ctl.data_dir, "bad", [result])
    wait_store_empty(watcher, root, node, after=repaired_at)
