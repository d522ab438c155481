"""Start real ``pepi node`` processes for tests and stop them reliably."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pepi_fleet.broker.runner import EmbeddedBroker, free_port
from support.mqtt_watch import Watcher
from support.processes import PepiProcess


@dataclass
class NodeProcess(PepiProcess):
    """One ``pepi node`` with its own data dir, Thrift and stream ports, login and log."""

    subcommand: ClassVar[str] = "node"

    node_id: str
    data_dir: Path
    thrift_port: int
    stream_port: int


def take_offline(watcher: Watcher, root: str, node: NodeProcess, kill: bool = False) -> None:
    """Stop ``node`` (or kill -9 it) and wait for the ``offline`` published after that."""
    began = time.time()
    if kill:
        node.kill()
    else:
        node.stop()
    watcher.wait_topic(f"{root}/nodes/{node.node_id}/availability", b"offline", after=began)


def node_process(
    broker: EmbeddedBroker, root: str, node_id: str, base: Path, *extra: str
) -> NodeProcess:
    """A configured (not yet started) node with its own broker login."""
    creds = broker.add_user(node_id)
    data_dir = base / node_id
    thrift_port, stream_port = free_port(), free_port()
    args = [
        "--broker",
        broker.url,
        "--node-id",
        node_id,
        "--topic-root",
        root,
        "--data-dir",
        str(data_dir),
        "--thrift-host",
        "127.0.0.1",
        "--thrift-port",
        str(thrift_port),
        "--stream-port",
        str(stream_port),
        "--resolution",
        "640x480",
        "--heartbeat",
        "1",
        *extra,
    ]
    return NodeProcess(
        args,
        creds,
        base / f"{node_id}.log",
        node_id=node_id,
        data_dir=data_dir,
        thrift_port=thrift_port,
        stream_port=stream_port,
    )
