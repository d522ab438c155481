"""A node whose broker cannot be reached says so in its log and keeps running (retrying)."""

from __future__ import annotations

from pathlib import Path

from support.nodes import NodeProcess
from support.web import wait_until

from pepi_fleet.broker.runner import Credentials, free_port


def test_node_logs_unreachable_broker_and_keeps_running(tmp_path: Path) -> None:
    broker_port = free_port()  # nothing listens there
    node = NodeProcess(
        [
            "--broker",
            f"mqtt://127.0.0.1:{broker_port}",
            "--node-id",
            "lonely",
            "--data-dir",
            str(tmp_path / "lonely"),
            "--thrift-host",
            "127.0.0.1",
            "--thrift-port",
            "0",
            "--stream-port",
            "-1",
        ],
        Credentials("lonely", "unused"),
        tmp_path / "lonely.log",
        node_id="lonely",
        data_dir=tmp_path / "lonely",
        thrift_port=0,
        stream_port=-1,
    ).start()
    expected = f"cannot reach the MQTT broker at 127.0.0.1:{broker_port} (Connection refused)"
    try:
        line = wait_until(
            lambda: next((ln for ln in node.log().splitlines() if expected in ln), None),
            10,
            f"{expected!r} in the node's log",
        )
        assert "WARNING" in line and "retrying" in line, line
        assert node.alive, node.log()
    finally:
        assert node.stop() == 0, node.log()
    assert node.log().count(expected) == 1, node.log()
