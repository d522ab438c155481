"""``stream_image`` over real Thrift on loopback: the node's server with a real store, the
controller's ThriftNodeClient and Downloader. The secret is required, the bytes arrive whole
and hashed, a corrupt, short or broken-off stream is detected and retried, nothing half
written stays, and the connection carries Thrift again after a stream."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.stored_captures import store_capture
from support.thrift_clients import camera_server

from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.ledger import ImageState, Ledger, image_path
from pepi_fleet.controller.node_client import AccessRefused, NodeUnreachable, RetrievalError
from pepi_fleet.controller.retrieval import retry_delay
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.core import image_stream
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.capture_service import CaptureService
from pepi_fleet.node.store import CaptureStore, StoreLimits, image_name
from pepi_fleet.node.thrift_server import CameraServerHandler, ThriftServer
from pepi_fleet.schemas.capture import CaptureResult

NODE = "strm1"
SECRET = "s" * 43
T0 = 1_763_712_000.0


class BreakingHandler(CameraServerHandler):
    """The node's handler, but the next ``break_next`` streams stop halfway and the server
    drops the connection, as when a node dies or a link fails mid-transfer."""

    break_next = 0
    stall_next = 0
    """...or send half and then nothing, the connection left open (a node hung mid-send)."""
    stalled = threading.Event()  # set by the test: the hung node lets go

    def send_stream(self, conn: socket.socket) -> None:
        if self.break_next == self.stall_next == 0:
            super().send_stream(conn)
            return
        pending = self._streams.take()
        if pending is None:
            return
        stall = self.stall_next > 0
        if stall:
            self.stall_next -= 1
        else:
            self.break_next -= 1
        assert conn.recv(1) == image_stream.GO
        assert not isinstance(pending.source, bytes)
        conn.sendall(pending.source.read(pending.size // 2))
        pending.close()
        if stall:
            self.stalled.wait(30)
        raise ConnectionError("the test broke the stream off")


@dataclass
class Served:
    store: CaptureStore
    handler: BreakingHandler
    port: int

    def client(self, secret: str | None = SECRET) -> ThriftNodeClient:
        return ThriftNodeClient(NODE, ("127.0.0.1", self.port), 10_000, secret=lambda: secret)

    def take(self, capture_id: str) -> CaptureResult:
        """A real capture (synthetic chart, encoded as the node does) into the store."""
        return store_capture(self.store, NODE, capture_id, T0, (640, 480))

    def stored_file(self, capture_id: str) -> Path:
        return self.store.root / "captures" / capture_id / image_name(0, "jpeg")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = CaptureStore(tmp_path / "node", StoreLimits(max_bytes=10**10, min_free_bytes=0))
    camera = SyntheticCamera(NODE, resolution=(64, 48))
    captures = CaptureService(NODE, camera, store, publish_result=lambda result: None)
    handler = BreakingHandler(NODE, store, captures, stream_urls=list, secret=SECRET)
    server = ThriftServer(handler, "127.0.0.1", 0)
    server.start()
    yield Served(store, handler, server.port)
    server.stop()


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, piece: memoryview) -> None:
        self.data += piece


def test_stream_image_delivers_the_stored_bytes_and_the_connection_carries_thrift_after(
    served: Served,
) -> None:
    results = [served.take(f"img-{k}") for k in range(3)]
    client = served.client()
    try:
        for result in results:
            sink = Collect()
            got = client.receive_image(result.capture_id, 0, "jpeg", sink, 10**8)
            stored = served.stored_file(result.capture_id).read_bytes()
            assert bytes(sink.data) == stored and got.size == len(stored)
            assert got.sha256 == hashlib.sha256(stored).hexdigest() == result.frames[0].sha256
            assert got.reported_sha256 == result.frames[0].sha256
            assert got.frame is not None and got.frame.width == 640
        # the same connection answers Thrift again after three streams
        assert [c.capture_id for c in client.list_captures()] == ["img-0", "img-1", "img-2"]
        held = served.store.get("img-0")
        assert held is not None and held.retrieved
    finally:
        client.close()


def test_stream_image_converts_on_request_and_refuses_unknown_captures(served: Served) -> None:
    served.take("img-1")
    client = served.client()
    try:
        sink = Collect()
        got = client.receive_image("img-1", 0, "png", sink, 10**8)
        assert bytes(sink.data[:8]) == b"\x89PNG\r\n\x1a\n"
        assert got.sha256 == got.reported_sha256 == hashlib.sha256(sink.data).hexdigest()
        with pytest.raises(RetrievalError, match="no longer has it"):
            client.receive_image("img-9", 0, "jpeg", Collect(), 10**8)
    finally:
        client.close()


@pytest.mark.parametrize("secret", [None, "x" * 43], ids=["missing", "wrong"])
def test_stream_image_needs_the_secret_and_sends_nothing_without_it(
    served: Served, secret: str | None
) -> None:
    served.take("img-1")
    client = served.client(secret)
    sink = Collect()
    try:
        with pytest.raises(AccessRefused):
            client.receive_image("img-1", 0, "jpeg", sink, 10**8)
    finally:
        client.close()
    assert sink.data == bytearray()
    # a plain Thrift client gets Unauthorized and the connection stays usable
    with camera_server(served.port, fleet=True) as raw:
        with pytest.raises(pepi_idl.load().Unauthorized, match="stream_image"):
            raw.stream_image("img-1", 0, "jpeg", secret or "")
        assert raw.ping() is True
    held = served.store.get("img-1")
    assert held is not None and not held.retrieved


def test_stream_image_larger_than_expected_is_declined_and_the_connection_stays_usable(
    served: Served,
) -> None:
    result = served.take("img-1")
    client = served.client()
    try:
        sink = Collect()
        with pytest.raises(RetrievalError, match="expected at most 100"):
            client.receive_image("img-1", 0, "jpeg", sink, 100)
        assert sink.data == bytearray()
        assert client.get_capture("img-1") == result  # declined: the node sent nothing
    finally:
        client.close()


def test_stream_broken_off_midway_raises_node_unreachable_and_the_next_call_reconnects(
    served: Served,
) -> None:
    served.take("img-1")
    served.handler.break_next = 1
    client = served.client()
    try:
        with pytest.raises(NodeUnreachable, match="closed the stream after"):
            client.receive_image("img-1", 0, "jpeg", Collect(), 10**8)
        sink = Collect()
        client.receive_image("img-1", 0, "jpeg", sink, 10**8)
        assert bytes(sink.data) == served.stored_file("img-1").read_bytes()
    finally:
        client.close()


def test_stream_that_stalls_midway_times_out_and_the_next_call_reconnects(
    served: Served,
) -> None:
    served.take("img-1")
    served.handler.stall_next = 1
    client = ThriftNodeClient(NODE, ("127.0.0.1", served.port), 500, secret=lambda: SECRET)
    try:
        began = time.monotonic()
        with pytest.raises(NodeUnreachable, match=r"after \d+ of \d+ bytes"):
            client.receive_image("img-1", 0, "jpeg", Collect(), 10**8)
        # the client's 0.5 s timeout ended the wait, not the node (which holds on for 30 s)
        assert time.monotonic() - began < 10
        sink = Collect()
        client.receive_image("img-1", 0, "jpeg", sink, 10**8)
        assert bytes(sink.data) == served.stored_file("img-1").read_bytes()
        # the kept connection is back in Python's timeout mode for the next Thrift call
        assert client.get_capture("img-1") is not None
    finally:
        served.handler.stalled.set()
        client.close()


# -- the Downloader over real Thrift ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def controller(served: Served, tmp_path: Path) -> Iterator[tuple[Ledger, Downloader, Clock]]:
    clock = Clock()
    ledger = Ledger(tmp_path / "controller", clock)
    downloader = Downloader(
        ledger,
        tmp_path / "controller",
        lambda node: ("127.0.0.1", served.port),
        lambda node, endpoint: served.client(),
        clock=clock,
    )
    yield ledger, downloader, clock
    downloader.close()
    ledger.close()


def state(ledger: Ledger, set_id: str) -> ImageState:
    detail = ledger.get_set(set_id)
    assert detail is not None
    [image] = detail.images
    return image.state


@pytest.mark.parametrize("fault", ["flipped", "truncated", "broken-off"])
def test_downloader_detects_a_bad_stream_retries_it_and_releases_only_a_verified_copy(
    served: Served, controller: tuple[Ledger, Downloader, Clock], tmp_path: Path, fault: str
) -> None:
    ledger, downloader, clock = controller
    result = served.take("scan-1")
    stored_path = served.stored_file("scan-1")
    good = stored_path.read_bytes()
    ledger.record_set("scan-1", clock(), [NODE])
    ledger.record_result("scan-1", result)
    if fault == "flipped":  # the node's disk returns other bytes than it hashed at capture
        stored_path.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
    elif fault == "truncated":
        stored_path.write_bytes(good[: len(good) // 3])
    else:
        served.handler.break_next = 1

    downloader.download_owed(NODE, force=True)
    copy = tmp_path / "controller" / image_path("scan-1", NODE, 0, "jpeg")
    assert state(ledger, "scan-1") is ImageState.FAILED
    assert not copy.exists() and not list(copy.parent.glob(".*.part"))
    assert served.store.get("scan-1") is not None  # not released

    stored_path.write_bytes(good)
    clock.now += retry_delay(1)
    downloader.download_owed(NODE)
    assert state(ledger, "scan-1") is ImageState.DONE
    assert copy.read_bytes() == good
    assert served.store.get("scan-1") is None  # released once verified
