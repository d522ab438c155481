"""The whole Controller in process, fake nodes behind its NodeClient seam and no broker: MQTT
messages are handed to it as paho would, what it does observed on its event stream."""

from __future__ import annotations

import contextlib
import queue
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.ledger import image_path
from pepi_fleet.controller.service import Controller
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas import CaptureResult, NodeStatus
from pepi_fleet.schemas.topics import Topics
from support.clock import ManualClock
from support.fake_node_client import FakeFleet

ROOT = "pepi-t/seam"
DOWNLOAD_WAIT_S = 30.0
TIMEOUT = 10.0

Event = dict[str, Any]


@pytest.fixture
def no_broker() -> Iterator[str]:
    """A loopback port that refuses connections and that nobody else can take meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        yield f"mqtt://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Rig:
    clock: ManualClock
    fleet: FakeFleet
    controller: Controller
    events: queue.Queue[Event]
    topics: Topics

    def send(self, topic: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.controller.receive(InboundMessage(topic, data, False, self.clock()))

    def online(self, node_id: str) -> None:
        """The node's retained status, as it arrives after every node connect."""
        self.send(self.topics.status(node_id), status(node_id, self.clock()).model_dump_json())
        self.wait(lambda e: e["type"] == "presence" and e["node_id"] == node_id)

    def result(self, result: CaptureResult) -> None:
        self.send(self.topics.result(result.node_id), result.model_dump_json())

    def wait(self, match: Callable[[Event], bool], timeout: float = TIMEOUT) -> Event:
        """The next event that matches (earlier ones are passed over)."""
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("the controller never emitted the expected event") from None
            if match(event):
                return event

    def summary(self, set_id: str) -> dict[str, Any]:
        event = self.wait(lambda e: e["type"] == "set_complete")
        summary: dict[str, Any] = event["summary"]
        assert summary["capture_id"] == set_id
        return summary

    def settle(self) -> list[Event]:
        """Events up to a point the worker has ticked past (two messages, one tick between)."""
        seen = []
        for n in range(2):
            # A result of an unreadable command: an event, and nothing else changes.
            marker = CaptureResult(
                node_id="barrier", capture_id=None, status="error", received_at=n, error="x"
            )
            self.send(self.topics.result("barrier"), marker.model_dump_json())
            while True:
                event = self.events.get(timeout=TIMEOUT)
                if event["type"] == "result" and event["node_id"] == "barrier":
                    break
                seen.append(event)
        return seen

    def until(self, check: Callable[[], bool], what: str) -> None:
        """Let the worker tick until ``check`` holds (state kept in the ledger or on a node)."""
        deadline = time.monotonic() + TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}")
            self.settle()

    def copy(self, set_id: str, node_id: str) -> bytes | None:
        path = self.controller.config.data_dir / image_path(set_id, node_id, 0, "jpeg")
        return path.read_bytes() if path.exists() else None


def status(node_id: str, now: float, heartbeat_s: float = 3600.0) -> NodeStatus:
    return NodeStatus.model_validate(
        {
            "node_id": node_id,
            "sent_at": now,
            "heartbeat_s": heartbeat_s,  # by default online however far the clock moves
            "version": "test",
            "thrift": {"host": "127.0.0.1", "port": 6000},
            "cameras": [],
            "stream_urls": [],
            "store": {"captures": 0, "bytes": 0, "free_bytes": 1},
            "clock": {"synced": True},
        }
    )


@contextlib.contextmanager
def running_rig(data_dir: Path, broker: str, **config: Any) -> Iterator[Rig]:
    """A started Controller on fake nodes; ``config`` overrides its settings."""
    clock = ManualClock()
    fleet = FakeFleet(clock)
    settings: dict[str, Any] = {"download_workers": 2, **config}
    cfg = ControllerConfig(broker=broker, topic_root=ROOT, data_dir=data_dir, **settings)
    controller = Controller(cfg, clock, node_clients=fleet.client)
    events = controller.events.subscribe()
    controller.start()
    try:
        yield Rig(clock, fleet, controller, events, Topics(ROOT))
    finally:
        controller.stop()


@pytest.fixture
def rig(tmp_path: Path, no_broker: str) -> Iterator[Rig]:
    with running_rig(tmp_path / "data", no_broker, download_wait_s=DOWNLOAD_WAIT_S) as r:
        yield r
