"""The fleet simulator's Thrift side (a test tool) implements the extension as the node does:
the controller's Downloader streams, verifies and releases from it over real Thrift."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.fleet_sim import HeldCapture, jpeg_for
from bench.sim_thrift import SimHandler, ThriftHost
from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.ledger import Ledger, image_path
from pepi_fleet.controller.node_client import AccessRefused
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.core.thrift_map import capture_info, result_of
from pepi_fleet.schemas.capture import Frame

NODE = "sim1"


@dataclass
class Store:
    """The smallest SimStore: captures in a dict."""

    node_id: str = NODE
    secret: str = "sim1-secret"
    captures: dict[str, HeldCapture] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def held(self) -> list[HeldCapture]:
        with self.lock:
            return list(self.captures.values())

    def get(self, capture_id: str) -> HeldCapture | None:
        with self.lock:
            return self.captures.get(capture_id)

    def mark_retrieved(self, capture_id: str) -> None:
        with self.lock:
            self.captures[capture_id].retrieved = True

    def release(self, capture_id: str) -> bool:
        with self.lock:
            return self.captures.pop(capture_id, None) is not None

    def start_capture(self, capture_id: str) -> None:
        raise AssertionError("not triggered in this test")

    def take(self, capture_id: str, size: int) -> HeldCapture:
        data = jpeg_for(1, capture_id, size)
        now = time.time() - 60
        frame = Frame(
            camera=0,
            timestamp=now,
            width=64,
            height=48,
            format="jpeg",
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        held = HeldCapture(capture_id, "mqtt", now, now, [frame], {0: data})
        with self.lock:
            self.captures[capture_id] = held
        return held


@pytest.fixture
def sim() -> Iterator[tuple[Store, int]]:
    store = Store()
    host = ThriftHost()
    port = host.add(SimHandler(store))
    host.start()
    yield store, port
    host.stop()


def test_simulated_node_streams_and_releases_through_the_downloader(
    sim: tuple[Store, int], tmp_path: Path
) -> None:
    store, port = sim
    held = [store.take(f"sim-{k}", 300_000) for k in range(3)]
    images = {h.capture_id: h.images[0] for h in held}
    ledger = Ledger(tmp_path)
    downloader = Downloader(
        ledger,
        tmp_path,
        lambda node: ("127.0.0.1", port),
        lambda node, endpoint: ThriftNodeClient(node, endpoint, secret=lambda: store.secret),
    )
    try:
        for h in held:
            ledger.record_set(h.capture_id, time.time(), [NODE])
            ledger.record_result(h.capture_id, result_of(NODE, capture_info(h)))
        downloader.download_owed(NODE, force=True)
        for cid, data in images.items():
            assert (tmp_path / image_path(cid, NODE, 0, "jpeg")).read_bytes() == data
            assert ledger.all_downloaded(cid)
        assert store.held() == []  # each released once its copy was verified
    finally:
        downloader.close()
        ledger.close()


def test_simulated_node_refuses_extension_calls_without_its_secret(
    sim: tuple[Store, int], tmp_path: Path
) -> None:
    store, port = sim
    store.take("sim-x", 10_000)
    client = ThriftNodeClient(NODE, ("127.0.0.1", port), secret=lambda: "wrong")
    try:
        with pytest.raises(AccessRefused, match="refused"):
            client.list_captures()
    finally:
        client.close()
    assert [h.capture_id for h in store.held()] == ["sim-x"]
