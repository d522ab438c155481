"""PEPI's server contract (docs section 5) over Thrift against a running `pepi node`."""

from __future__ import annotations

import io
import time
import urllib.request

import pytest
from conftest import StartNode
from PIL import Image
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess
from support.thrift_clients import camera_server, fleet_server

from pepi_fleet.core import idl as pepi_idl


@pytest.fixture
def node(start_node: StartNode) -> NodeProcess:
    return start_node("pepi1")


def test_contract_ping_is_true(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        assert server.ping() is True


def test_contract_identify_is_nonempty_str(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        ident = server.identify()
    assert isinstance(ident, str) and ident == "pepi1"


def test_contract_stream_urls_stream_jpeg_frames(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        urls = server.stream_urls()
    assert urls and all(isinstance(u, str) and u.startswith("http") for u in urls)
    with urllib.request.urlopen(urls[0], timeout=10) as response:
        ctype = response.headers["Content-Type"]
        assert ctype.startswith("multipart/x-mixed-replace; boundary=")
        boundary = ctype.split("boundary=")[1].encode()
        data = b""
        while data.count(b"--" + boundary) < 3:
            data += response.read1(65536)
    parts = data.split(b"--" + boundary)[1:3]
    for part in parts:
        head, body = part.split(b"\r\n\r\n", 1)
        assert b"Content-Type: image/jpeg" in head
        assert Image.open(io.BytesIO(body.rstrip(b"\r\n"))).format == "JPEG"


@pytest.mark.parametrize(
    ("method", "fmt"), [("retrieve_stills_jpg", "JPEG"), ("retrieve_stills_png", "PNG")]
)
def test_contract_capture_then_retrieve(node: NodeProcess, method: str, fmt: str) -> None:
    with camera_server(node.thrift_port) as server:
        server.start_capture("1")
    time.sleep(1)  # the contract itself retrieves one second later, on a new connection
    with camera_server(node.thrift_port) as server:
        images = getattr(server, method)("1")
    assert len(images) == 1
    image = Image.open(io.BytesIO(images[0]))
    assert image.format == fmt
    assert image.size == (640, 480)


def test_contract_unknown_code_raises_image_unavailable(node: NodeProcess) -> None:
    idl = pepi_idl.load()
    with camera_server(node.thrift_port) as server:
        with pytest.raises(idl.ImageUnavailable):
            server.retrieve_stills_jpg("never-captured")
        with pytest.raises(idl.ImageUnavailable):
            server.retrieve_stills_png("../../etc/passwd")


def test_contract_enumerate_methods(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        methods = server.enumerate_methods()
    for name in ("ping", "identify", "stream_urls", "shutdown"):
        assert methods[name] == []
    assert methods["start_capture"] == ["data_code"]
    assert methods["retrieve_stills_png"] == ["with_data_code"]
    assert methods["retrieve_stills_jpg"] == ["with_data_code"]
    assert "enumerate_methods" in methods


def test_thrift_retrieve_waits_for_capture_in_progress(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        server.start_capture("quick")
        images = server.retrieve_stills_jpg("quick")  # no pause: waits for the capture
    assert Image.open(io.BytesIO(images[0])).format == "JPEG"


def test_thrift_recapture_keeps_older_capture_renamed(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        server.start_capture("7")
        first = server.retrieve_stills_jpg("7")[0]
        server.start_capture("7")
    with fleet_server(node.thrift_port, node.data_dir) as fleet:
        deadline = time.monotonic() + 10
        while "7.r1" not in {c.capture_id for c in fleet.list_captures()}:
            assert time.monotonic() < deadline, "older capture was not kept as 7.r1"
            time.sleep(0.05)
        second = fleet.retrieve_stills_jpg("7")[0]
        kept = fleet.fetch_image("7.r1", 0, "jpeg")
    assert kept.data == first
    assert second != first


def test_thrift_retrieval_does_not_delete_but_release_does(node: NodeProcess) -> None:
    idl = pepi_idl.load()
    with fleet_server(node.thrift_port, node.data_dir) as server:
        server.start_capture("keep")
        a = server.retrieve_stills_jpg("keep")
        b = server.retrieve_stills_jpg("keep")
        assert a == b
        assert server.release("keep") is True
        assert server.release("keep") is False
        with pytest.raises(idl.ImageUnavailable):
            server.retrieve_stills_jpg("keep")


def test_thrift_shutdown_is_only_logged_by_default(node: NodeProcess) -> None:
    with camera_server(node.thrift_port) as server:
        server.shutdown()
    with camera_server(node.thrift_port) as server:
        assert server.ping() is True
    assert node.alive


def test_thrift_shutdown_stops_a_node_that_allows_it(
    start_node: StartNode, watcher: Watcher, root: str
) -> None:
    node = start_node("pepi2", "--allow-shutdown")
    asked = time.time()
    with camera_server(node.thrift_port) as server:
        server.shutdown()
    assert node.proc is not None
    assert node.proc.wait(timeout=20) == 0  # a clean stop...
    # ...that says goodbye itself (a Last Will would mean it died)
    watcher.wait_topic(f"{root}/nodes/pepi2/availability", b"offline", after=asked)
