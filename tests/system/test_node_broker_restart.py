"""A broker that restarts: nodes reconnect, re-announce themselves and capture again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.expect import assert_retrievable, wait_result
from support.mqtt_watch import Watcher
from support.nodes import node_process
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker

pytestmark = pytest.mark.system
ROOT = "pepi/v1"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it will be restarted."""
    b = EmbeddedBroker(root=ROOT, workdir=tmp_path / "broker", persistence=True)
    b.start()
    yield b
    b.close()


def test_node_reconnects_after_broker_restart(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    node = node_process(own_broker, ROOT, "cam1", tmp_path).start()
    try:
        watcher = Watcher(own_broker.port, [f"{ROOT}/#"])
        watcher.wait_topic(f"{ROOT}/nodes/cam1/availability", b"online", timeout=20)
        mosquitto_pub(own_broker.port, f"{ROOT}/capture", "before")
        before = wait_result(watcher, ROOT, "cam1", "before")
        watcher.close()

        own_broker.restart(kill=True)
        restarted_at = time.time()
        watcher = Watcher(own_broker.port, [f"{ROOT}/#"])
        # paho backs off 1 s, 2 s, …: the node must come back on its own
        seen = watcher.wait_for(
            lambda s: (
                s.topic == f"{ROOT}/nodes/cam1/status" and s.at >= restarted_at and not s.retain
            ),
            timeout=40,
            what="fresh status after the restart",
        )
        assert seen.payload
        mosquitto_pub(own_broker.port, f"{ROOT}/capture", "after")
        after = wait_result(watcher, ROOT, "cam1", "after")
        watcher.close()
        assert_retrievable(node, before)
        assert_retrievable(node, after)
        assert node.alive
    finally:
        node.stop()
