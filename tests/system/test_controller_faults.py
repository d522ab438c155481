"""Controller faults: kill -9 mid-download, nodes lost during a set or before their download."""

from __future__ import annotations

import time

import pytest
from conftest import StartCam1, StartNode, wait_online
from support.controllers import (
    StartController,
    assert_set_on_disk,
    ledger_states,
    pepi_name,
    restart,
    wait_store_empty,
    wait_summary,
    wait_until,
)
from support.expect import wait_result
from support.mqtt_watch import Watcher
from support.nodes import take_offline
from support.processes import resume, suspend
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.ledger import LEDGER_FILE
from pepi_fleet.schemas import CaptureResult, CaptureSetSummary, CaptureStatus

pytestmark = pytest.mark.system


def test_controller_kill9_mid_download_resumes_exactly_once(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    # A 2 s heartbeat: the controller is held for a few seconds below and must not judge
    # the nodes stale (3 heartbeats) on waking, before their queued heartbeats are read.
    big = ("--resolution", "4056x3040", "--heartbeat", "2")
    nodes = [start_node(f"big{i}", *big) for i in range(3)]
    ctl = start_controller()
    for node in nodes:
        ctl.wait_log(f"node {node.node_id}: None -> online")

    # Hold the controller while the nodes capture, so that it learns of every result at
    # once and starts all downloads together when it resumes.
    ctl.freeze()
    capture_ids = ["big-1", "big-2", "big-3"]
    results: dict[str, list[CaptureResult]] = {}
    for capture_id in capture_ids:
        mosquitto_pub(broker.port, f"{root}/capture", capture_id)
        results[capture_id] = [wait_result(watcher, root, n.node_id, capture_id) for n in nodes]
    assert all(r.status is CaptureStatus.OK for rs in results.values() for r in rs)
    owed = {(cid, r.node_id, f.camera) for cid, rs in results.items() for r in rs for f in r.frames}

    # The last node freezes: the controller gets everything from the others and hangs
    # in the middle of a transfer from it. That is when it is killed.
    stuck = nodes[-1]
    assert stuck.proc is not None
    suspend(stuck.proc)
    try:
        ctl.thaw()

        def mid_download() -> bool:
            states = ledger_states(ctl)
            return (
                set(states) == owed
                and all(s == "done" for k, s in states.items() if k[1] != stuck.node_id)
                and "downloading" in {s for k, s in states.items() if k[1] == stuck.node_id}
            )

        wait_until(
            mid_download, "others downloaded, a download from the frozen node begun", timeout=90
        )
        ctl.kill()
    finally:
        resume(stuck.proc)
    states = ledger_states(ctl)
    assert {s for k, s in states.items() if k[1] == stuck.node_id} != {"done"}
    written = {
        path: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in ctl.data_dir.glob("*/*.jpeg")
    }
    assert len(written) == len(owed) - len(capture_ids)  # all but the frozen node's

    restarted_at = time.time()
    restart(ctl, watcher)
    for node in nodes:
        wait_store_empty(watcher, root, node, after=restarted_at)

    assert set(ledger_states(ctl).values()) == {"done"}
    for capture_id, rs in results.items():
        assert_set_on_disk(ctl.data_dir, capture_id, rs)
        # the restarted controller still tells automations (and `pepi capture --wait`)
        # (the killed run may have summarised the set as still downloading before it died)
        seen = watcher.wait_for(
            lambda m, cid=capture_id: (
                m.topic == f"{root}/controller/captures"
                and m.at >= restarted_at
                and (s := CaptureSetSummary.model_validate_json(m.payload)).capture_id == cid
                and s.downloaded
            ),
            30,
            f"the restarted controller's downloaded summary of {capture_id}",
        )
        summary = CaptureSetSummary.model_validate_json(seen.payload)
        assert summary.downloaded and len(summary.files) == len(rs)
    # Files verified before the kill were neither fetched nor written again.
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written} == written
    leftovers = {p.name for p in ctl.data_dir.iterdir() if p.is_file()}
    assert {name.removeprefix(LEDGER_FILE) for name in leftovers} <= {"", "-wal", "-shm"}
    assert sorted(p.name for p in ctl.data_dir.iterdir() if p.is_dir()) == capture_ids


def test_controller_set_completes_without_node_lost_during_it(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    start_node("cam1")
    lost = start_node("cam2")
    ctl = start_controller(set_timeout_s=3)
    for node_id in ("cam1", "cam2"):
        ctl.wait_log(f"node {node_id}: None -> online")

    assert lost.proc is not None
    suspend(lost.proc)  # hangs before it sees the trigger, then dies
    mosquitto_pub(broker.port, f"{root}/capture", "partial")
    result = wait_result(watcher, root, "cam1", "partial")
    take_offline(watcher, root, lost, kill=True)

    summary = wait_summary(watcher, root, "partial", timeout=20)
    assert summary.expected == ["cam1", "cam2"]
    assert not summary.complete
    assert [(o.node_id, o.status) for o in summary.outcomes] == [
        ("cam1", CaptureStatus.OK),
        ("cam2", None),
    ]
    assert summary.completed_at - summary.triggered_at >= 3
    assert summary.downloaded and summary.files == [f"partial/{pepi_name('partial', 'cam1', 0)}"]
    assert_set_on_disk(ctl.data_dir, "partial", [result])


def test_controller_retrieves_capture_when_node_returns(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    node, ctl = start_cam1()
    mark = ctl.wait_log("node cam1: None -> online")  # where its later log starts

    # The controller hears of the result only once the node is already dead.
    ctl.freeze()
    try:
        mosquitto_pub(broker.port, f"{root}/capture", "owed")
        result = wait_result(watcher, root, "cam1", "owed", CaptureStatus.OK)
        take_offline(watcher, root, node, kill=True)
    finally:
        ctl.thaw()
    ctl.wait_log("-> offline", start=mark)
    wait_until(lambda: ("owed", "cam1", 0) in ledger_states(ctl), "the ledger owes cam1's image")
    assert ledger_states(ctl)[("owed", "cam1", 0)] != "done"
    assert list(ctl.data_dir.glob("owed/*.jpeg")) == []
    # Automations hear of the set when it completes, not when the node may come back...
    pending = wait_summary(watcher, root, "owed", timeout=30)
    assert pending.complete and not pending.downloaded and pending.files == []

    restarted_at = time.time()
    node.start()
    wait_online(watcher, root, node, after=restarted_at)
    # ...and again once its images are on disk.
    summary = wait_summary(watcher, root, "owed", timeout=30, after=restarted_at)
    assert summary.complete and summary.downloaded
    assert_set_on_disk(ctl.data_dir, "owed", [result])
    wait_store_empty(watcher, root, node, after=restarted_at)
