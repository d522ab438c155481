"""The controller turns a mosquitto_pub trigger into a verified set on disk, then empties nodes."""

from __future__ import annotations

import time

import pytest
from conftest import StartCam1, StartNode
from support.controllers import (
    StartController,
    assert_set_on_disk,
    ledger_states,
    pepi_name,
    wait_store_empty,
    wait_summary,
)
from support.expect import wait_result
from support.mqtt_watch import Watcher
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.schemas import CaptureStatus


@pytest.mark.parametrize("message", ["scan-042", None], ids=["explicit-id", "no-id"])
def test_controller_trigger_lands_every_nodes_images_on_disk(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
    message: str | None,
) -> None:
    nodes = [start_node("cam1"), start_node("cam2", "--camera-count", "2")]
    ctl = start_controller()
    # The controller expects the nodes it has heard from; wait until it knows both.
    for node in nodes:
        ctl.wait_log(f"node {node.node_id}: None -> online")

    mosquitto_pub(broker.port, f"{root}/capture", message)

    results = [wait_result(watcher, root, node.node_id) for node in nodes]
    assert all(r.status is CaptureStatus.OK for r in results)
    if message is None:  # each node stores it under its own auto-<receipt ms> id
        assert all(r.capture_id and r.capture_id.startswith("auto-") for r in results)
    summary = wait_summary(
        watcher,
        root,
        message or (lambda cid: cid.startswith("auto-")),
        timeout=30,
        downloaded=True,
    )
    set_id = summary.capture_id
    assert summary.complete and summary.downloaded
    assert summary.expected == ["cam1", "cam2"]
    assert [(o.node_id, o.status, o.frames) for o in summary.outcomes] == [
        ("cam1", CaptureStatus.OK, 1),
        ("cam2", CaptureStatus.OK, 2),
    ]
    assert summary.files == sorted(
        f"{set_id}/{pepi_name(set_id, r.node_id, f.camera)}" for r in results for f in r.frames
    )
    assert summary.data_dir == str(ctl.data_dir.resolve())
    assert summary.spread_s is not None and summary.spread_s >= 0
    assert_set_on_disk(ctl.data_dir, set_id, results)
    assert set(ledger_states(ctl).values()) == {"done"}
    for node in nodes:
        wait_store_empty(watcher, root, node, after=time.time())


def test_controller_two_triggers_make_two_sets(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    node, ctl = start_cam1()
    for capture_id in ("first", "second"):
        mosquitto_pub(broker.port, f"{root}/capture", capture_id)
        result = wait_result(watcher, root, "cam1", capture_id)
        summary = wait_summary(watcher, root, capture_id, downloaded=True)
        assert summary.complete and summary.downloaded
        assert_set_on_disk(ctl.data_dir, capture_id, [result])
    assert sorted(p.name for p in ctl.data_dir.iterdir() if p.is_dir()) == ["first", "second"]
    wait_store_empty(watcher, root, node, after=time.time())
