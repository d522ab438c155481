"""What the controller believes about nodes: online, offline, stale, removed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import StartNode, wait_online
from support.controllers import StartController, controller_starter, wait_summary, wait_until
from support.mqtt_watch import Watcher
from support.nodes import node_process, take_offline
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker


def states(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["node_id"]: row["state"] for row in rows}


def test_controller_presence_follows_node_kill9_and_restart(
    root: str, watcher: Watcher, start_node: StartNode, start_controller: StartController
) -> None:
    ctl = start_controller()
    node = start_node("cam1")
    mark = ctl.wait_log("node cam1: None -> online")
    assert states(ctl.nodes()) == {"cam1": "online"}

    take_offline(watcher, root, node, kill=True)
    mark = ctl.wait_log("node cam1: online -> offline", start=mark)
    assert states(ctl.nodes()) == {"cam1": "offline"}

    restarted_at = time.time()
    node.start()
    wait_online(watcher, root, node, after=restarted_at)
    ctl.wait_log("-> online", start=mark)
    assert states(ctl.nodes()) == {"cam1": "online"}


def test_controller_presence_offline_node_is_not_expected_in_a_set(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    start_node("cam1")
    gone = start_node("cam2")
    ctl = start_controller(set_timeout_s=30)
    ctl.wait_log("node cam2: None -> online")
    take_offline(watcher, root, gone)
    ctl.wait_log("node cam2: online -> offline")

    mosquitto_pub(broker.port, f"{root}/capture", "without-cam2")
    # Completes on cam1's answer, long before the 30 s set timeout.
    summary = wait_summary(watcher, root, "without-cam2", timeout=15)
    assert summary.expected == ["cam1"] and summary.complete


def test_controller_presence_cleared_retained_status_removes_node(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    node = start_node("cam1")
    ctl = start_controller()
    ctl.wait_log("node cam1: None -> online")
    take_offline(watcher, root, node)
    assert states(ctl.nodes()) == {"cam1": "offline"}

    # An operator retires the machine: clear its retained topics (empty retained payloads).
    for topic in ("status", "availability"):
        mosquitto_pub(
            broker.port,
            f"{root}/nodes/cam1/{topic}",
            None,
            "-r",
            username=ctl.creds.username,
            password=ctl.creds.password,
        )
    ctl.wait_log("node cam1: offline -> removed")
    assert ctl.nodes() == []


def test_controller_presence_dead_nodes_persisted_online_turns_stale(
    root: str, start_controller: StartController, tmp_path: Path
) -> None:
    # A broker of this test's own: it is killed, which the session broker must never be.
    workdir = tmp_path / "persistent-broker"
    workdir.mkdir()
    own = EmbeddedBroker(root=root, persistence=True, workdir=workdir)
    own.add_user("controller")
    own.start()
    watcher = Watcher(own.port, [f"{root}/#"])
    dead = node_process(own, root, "cam1", tmp_path)
    alive = node_process(own, root, "cam2", tmp_path)
    try:
        with controller_starter(own, root, watcher, tmp_path) as start_own_controller:
            for node in (dead, alive):
                node.start()
                wait_online(watcher, root, node)
            ctl = start_own_controller(set_timeout_s=30)
            ctl.wait_log("node cam1: None -> online")
            # The broker saves retained messages every second; wait for a save that holds
            # cam1's online and status, so the restarted broker still announces it.
            seen_status = watcher.wait_topic(f"{root}/nodes/cam1/status").at
            db = workdir / "mosquitto.db"
            wait_until(
                lambda: db.exists() and db.stat().st_mtime > seen_status + 0.1,
                "mosquitto saved its retained messages",
            )

            mark = len(ctl.log())
            own.stop(kill=True)  # broker and cam1 die together: no Last Will is ever sent
            dead.kill()
            restarted_at = time.time()
            own.start()
            mark = ctl.wait_log("connected to", start=mark)  # the controller is back

            # Still "online" on the broker, but its heartbeat never resumes.
            late_joiner = Watcher(own.port, [f"{root}/nodes/cam1/availability"])
            try:
                assert late_joiner.wait_topic(f"{root}/nodes/cam1/availability").payload == (
                    b"online"
                )
            finally:
                late_joiner.close()
            ctl.wait_log("node cam1: online -> stale", start=mark)
            assert states(ctl.nodes()) == {"cam1": "stale", "cam2": "online"}

            # cam2 reconnects by itself; a set triggered now waits for cam2 only.
            # A fresh publish reaches a subscriber with retain=0, a replayed one with 1.
            watcher.wait_for(
                lambda s: (
                    s.topic == f"{root}/nodes/cam2/status" and not s.retain and s.at >= restarted_at
                ),
                what="a heartbeat of cam2 after the restart",
            )
            mosquitto_pub(own.port, f"{root}/capture", "after-restart")
            summary = wait_summary(watcher, root, "after-restart", timeout=15)
            assert summary.expected == ["cam2"] and summary.complete
    finally:
        dead.kill()
        alive.stop()
        watcher.close()
        own.close()
