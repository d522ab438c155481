"""Retained presence: online + status on connect, Last Will on kill -9, store survives restart."""

from __future__ import annotations

import time

from conftest import StartNode, wait_online
from support.expect import assert_retrievable, wait_result
from support.mqtt_watch import Watcher
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.schemas import NodeStatus


def test_node_publishes_retained_online_and_status(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    # the status follows `online` a moment later; a client joining after both gets both retained
    watcher.wait_topic(f"{root}/nodes/cam1/status")
    late_joiner = Watcher(broker.port, [f"{root}/nodes/+/availability", f"{root}/nodes/+/status"])
    try:
        online = late_joiner.wait_topic(f"{root}/nodes/cam1/availability", b"online")
        seen = late_joiner.wait_topic(f"{root}/nodes/cam1/status")
    finally:
        late_joiner.close()
    assert online.retain and seen.retain
    status = NodeStatus.model_validate_json(seen.payload)
    assert status.node_id == "cam1"
    assert status.thrift.port == node.thrift_port
    assert status.cameras[0].resolution == (640, 480)
    assert status.stream_urls and status.heartbeat_s == 1.0


def test_node_heartbeat_repeats(root: str, watcher: Watcher, start_node: StartNode) -> None:
    start_node("cam1")
    first = watcher.wait_topic(f"{root}/nodes/cam1/status")
    later = watcher.wait_topic(f"{root}/nodes/cam1/status", after=first.at + 0.5, timeout=5)
    a = NodeStatus.model_validate_json(first.payload)
    b = NodeStatus.model_validate_json(later.payload)
    assert b.sent_at > a.sent_at


def test_node_kill9_turns_offline_through_last_will(
    root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1", "--heartbeat", "1")
    killed_at = time.time()
    node.kill()
    # keepalive is 15 s; the broker notices the dropped TCP connection at once on loopback
    seen = watcher.wait_topic(
        f"{root}/nodes/cam1/availability", b"offline", after=killed_at, timeout=30
    )
    assert seen.at - killed_at < 25


def test_node_clean_stop_publishes_offline(
    root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    stopped_at = time.time()
    node.stop()
    watcher.wait_topic(f"{root}/nodes/cam1/availability", b"offline", after=stopped_at, timeout=10)


def test_node_restart_serves_captures_stored_before(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    mosquitto_pub(broker.port, f"{root}/capture", "before-restart")
    result = wait_result(watcher, root, "cam1", "before-restart")
    node.kill()
    restarted_at = time.time()
    node.start()
    wait_online(watcher, root, node, after=restarted_at)
    assert_retrievable(node, result)
