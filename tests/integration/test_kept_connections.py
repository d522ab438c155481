"""Download passes keep their node's Thrift connection for the next pass (real Thrift on
loopback, a real node store): one connection serves several captures, a connection the node
dropped meanwhile (it restarted) is replaced without failing the pass, and the future of a
submitted pass resolves with the image durable and done."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from support.stored_captures import store_capture

from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.idle_clients import IdleClients
from pepi_fleet.controller.ledger import ImageState, Ledger, image_path
from pepi_fleet.controller.node_client import Endpoint, NodeClient
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.capture_service import CaptureService
from pepi_fleet.node.store import CaptureStore, StoreLimits
from pepi_fleet.node.thrift_server import CameraServerHandler, ThriftServer
from pepi_fleet.schemas.capture import CaptureResult

NODE = "kept1"
SECRET = "k" * 43
T0 = 1_763_712_000.0


@dataclass
class Node:
    store: CaptureStore
    handler: CameraServerHandler
    server: ThriftServer

    def restart(self) -> None:
        """The node's server goes away (every connection hung up) and comes back on its port."""
        port = self.server.port
        self.server.stop()
        self.server = ThriftServer(self.handler, "127.0.0.1", port)
        self.server.start()

    def take(self, capture_id: str) -> CaptureResult:
        return store_capture(self.store, NODE, capture_id, T0, (320, 240))


@dataclass
class Clients:
    """The Downloader's client factory: real Thrift clients, counted."""

    made: list[ThriftNodeClient] = field(default_factory=list)

    def __call__(self, node_id: str, endpoint: Endpoint) -> ThriftNodeClient:
        client = ThriftNodeClient(node_id, endpoint, 10_000, secret=lambda: SECRET)
        self.made.append(client)
        return client


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    store = CaptureStore(tmp_path / "node", StoreLimits(max_bytes=10**10, min_free_bytes=0))
    captures = CaptureService(
        NODE, SyntheticCamera(NODE, resolution=(64, 48)), store, publish_result=lambda r: None
    )
    handler = CameraServerHandler(NODE, store, captures, stream_urls=list, secret=SECRET)
    server = ThriftServer(handler, "127.0.0.1", 0)
    server.start()
    served = Node(store, handler, server)
    yield served
    served.server.stop()


def downloaded(node: Node, tmp_path: Path, ledger: Ledger, set_id: str) -> None:
    """The set's image is done, without a failed try, byte for byte, and released."""
    detail = ledger.get_set(set_id)
    assert detail is not None
    [image] = detail.images
    assert image.state is ImageState.DONE and image.attempts == 0 and image.last_error is None
    copy = tmp_path / "controller" / image_path(set_id, NODE, 0, "jpeg")
    assert copy.stat().st_size == image.size
    assert node.store.get(set_id) is None


def test_passes_keep_the_connection_and_replace_one_the_node_dropped(
    node: Node, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "controller")
    clients = Clients()
    downloader = Downloader(
        ledger, tmp_path / "controller", lambda n: ("127.0.0.1", node.server.port), clients
    )
    try:
        for k, restart in enumerate([False, False, True, False]):
            if restart:
                node.restart()  # the kept connection is dead now
            set_id = f"scan-{k}"
            ledger.record_result(set_id, node.take(set_id))
            downloader.submit(NODE).result(timeout=30)  # resolved once durable and done
            assert downloader.wait_settled(timeout=30)  # the release followed in the same job
            downloaded(node, tmp_path, ledger, set_id)
        assert len(clients.made) == 1  # one client, reconnected once after the restart
    finally:
        downloader.close()
        ledger.close()
    assert clients.made[0]._client is None  # closed with the downloader


class Counted:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_idle_clients_keep_at_most_the_limit_and_close_the_least_recently_used() -> None:
    idle = IdleClients(limit=2)
    counted = [Counted(), Counted(), Counted()]
    a, b, c = (cast(NodeClient, x) for x in counted)
    idle.give_back("a", ("127.0.0.1", 1), a)
    idle.give_back("b", ("127.0.0.1", 2), b)
    assert idle.take("a", ("127.0.0.1", 1)) is a  # in use now: not idle
    idle.give_back("a", ("127.0.0.1", 1), a)  # b is now the oldest
    idle.give_back("c", ("127.0.0.1", 3), c)
    assert [x.closed for x in counted] == [0, 1, 0] and len(idle) == 2
    assert idle.take("b", ("127.0.0.1", 2)) is None
    assert idle.take("a", ("127.0.0.1", 9)) is None  # another endpoint: a new client
    moved = Counted()
    idle.give_back("a", ("127.0.0.1", 9), cast(NodeClient, moved))  # a's old one is closed
    assert [x.closed for x in counted] == [1, 1, 0] and len(idle) == 2
    idle.close()
    assert [x.closed for x in counted] == [1, 1, 1] and moved.closed == 1 and len(idle) == 0
