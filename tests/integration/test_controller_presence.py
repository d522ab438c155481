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

from pepi_fleet.broker.runner import EmbeddedBroker, free_port
from pepi_fleet.schemas import NodeStatus


def states(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["node_id"]: row["state"] for row in rows}


def test_controller_presence_follows_node_kill9_and_restart(
    root: str, watcher: Watcher, start_node: StartNode, start_controller: StartController
) -> None:
    ctl = start_controller()
    node = start_node("cam1")
    ctl.wait_states({"cam1": "online"})
    assert states(ctl.nodes()) == {"cam1": "online"}

    take_offline(watcher, root, node, kill=True)
    ctl.wait_states({"cam1": "offline"})
    assert states(ctl.nodes()) == {"cam1": "offline"}

    restarted_at = time.time()
    node.start()
    wait_online(watcher, root, node, after=restarted_at)
    ctl.wait_states({"cam1": "online"})
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
    ctl.wait_states({"cam1": "online", "cam2": "online"})
    take_offline(watcher, root, gone)
    ctl.wait_states({"cam1": "online", "cam2": "offline"})

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
    ctl.wait_states({"cam1": "online"})
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
    ctl.wait_states({"cam1": "removed"})
    assert ctl.nodes() == []


def test_controller_presence_node_clock_far_off_is_judged_alike_by_cli_and_api(
    broker: EmbeddedBroker, root: str, start_controller: StartController
) -> None:
    ctl = start_controller()
    # A node whose clock is two hours behind (a Pi without a real-time clock before NTP),
    # heartbeating now: its retained availability and status, as it would publish them.
    skewed = NodeStatus.model_validate(
        {
            "node_id": "skewed",
            "sent_at": time.time() - 2 * 3600,
            "heartbeat_s": 60.0,
            "version": "test",
            "thrift": {"host": "127.0.0.1", "port": free_port()},
            "cameras": [],
            "stream_urls": [],
            "store": {"captures": 0, "bytes": 0, "free_bytes": 1},
            "clock": {"synced": False},
        }
    )
    for leaf, payload in (("availability", "online"), ("status", skewed.model_dump_json())):
        mosquitto_pub(
            broker.port,
            f"{root}/nodes/skewed/{leaf}",
            payload,
            "-r",
            username=ctl.creds.username,
            password=ctl.creds.password,
        )
    api = ctl.wait_states({"skewed": "online"})
    [cli] = ctl.nodes()
    assert cli["state"] == api["skewed"]["state"] == "online"
    # One model: `pepi nodes --json` has the fields of GET /api/nodes, in seconds.
    assert list(cli) == list(api["skewed"])
    assert cli["heartbeat_s"] == api["skewed"]["heartbeat_s"] == 60.0
    assert 0 <= cli["heartbeat_age_s"] < 60


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
            ctl.wait_states({"cam1": "online", "cam2": "online"})
            # The broker saves retained messages every second; wait for a save that holds
            # cam1's online and status, so the restarted broker still announces it.
            seen_status = watcher.wait_topic(f"{root}/nodes/cam1/status").at
            db = workdir / "mosquitto.db"
            wait_until(
                lambda: db.exists() and db.stat().st_mtime > seen_status + 0.1,
                "mosquitto saved its retained messages",
            )

            own.stop(kill=True)  # broker and cam1 die together: no Last Will is ever sent
            dead.kill()
            restarted_at = time.time()
            own.start()

            # Still "online" on the broker, but its heartbeat never resumes.
            late_joiner = Watcher(own.port, [f"{root}/nodes/cam1/availability"])
            try:
                assert late_joiner.wait_topic(f"{root}/nodes/cam1/availability").payload == (
                    b"online"
                )
            finally:
                late_joiner.close()
            # Back on the broker, the controller hears cam1's retained status again (a
            # heartbeat, timed by its arrival) and then nothing: stale 3 heartbeats later.
            nodes = ctl.wait_nodes(
                lambda n: (
                    n.keys() == {"cam1", "cam2"}
                    and n["cam1"]["state"] == "stale"
                    and n["cam1"]["last_heartbeat_at"] >= restarted_at
                    and n["cam2"]["state"] == "online"
                ),
                "cam1 stale after the controller heard its retained status again",
            )
            assert states(list(nodes.values())) == {"cam1": "stale", "cam2": "online"}
            # (`pepi nodes` reads the retained topics afresh: it sees what a controller that
            # has just connected sees, cam1 online for 3 heartbeats; see the README.)

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
