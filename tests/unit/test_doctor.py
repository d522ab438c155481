"""``pepi doctor``'s camera, port and disk checks (the broker check runs against mosquitto in
tests/integration/test_doctor_broker.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_camera import install_fake_picamera2

from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.doctor import Check, check_camera, check_disk, check_port, format_report
from pepi_fleet.node.stream import MjpegServer
from pepi_fleet.node.thrift_server import ThriftServer


def config(tmp_path: Path, **options: Any) -> NodeConfig:
    return NodeConfig(node_id="cam01", data_dir=tmp_path / "data", **options)


@pytest.fixture
def devices(tmp_path: Path) -> Path:
    """A /dev with the nodes a Pi 5 camera stack opens, all accessible to this user."""
    dev = tmp_path / "dev"
    (dev / "dma_heap").mkdir(parents=True)
    for name in ("media0", "video0", "dma_heap/system", "dma_heap/linux,cma"):
        (dev / name).touch()
    return dev


def test_check_camera_fake_picamera2_lists_the_attached_cameras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devices: Path
) -> None:
    install_fake_picamera2(monkeypatch, cameras=["imx296", "imx708"])
    check = check_camera(config(tmp_path, camera="picamera2", camera_count=2), devices)
    assert check == Check("camera", "ok", "2 camera(s): imx296, imx708")


def test_check_camera_too_few_cameras_says_what_to_look_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devices: Path
) -> None:
    install_fake_picamera2(monkeypatch, cameras=["imx477"])
    check = check_camera(config(tmp_path, camera="picamera2", camera_count=2), devices)
    assert check.status == "fail" and "sees 1 camera(s), 2 configured" in check.message
    assert check.fix is not None and "rpicam-hello --list-cameras" in check.fix


def test_check_camera_device_this_user_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devices: Path
) -> None:
    install_fake_picamera2(monkeypatch)
    heap = devices / "dma_heap" / "system"
    check = check_camera(config(tmp_path, camera="picamera2"), devices, lambda p: p != heap)
    assert check.status == "fail" and str(heap) in check.message
    assert check.fix is not None and "group video" in check.fix


def test_check_camera_without_picamera2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "picamera2", None)
    check = check_camera(config(tmp_path, camera="picamera2"))
    assert check.status == "fail" and check.fix is not None and "python3-picamera2" in check.fix


def test_check_camera_synthetic_needs_no_hardware(tmp_path: Path) -> None:
    assert check_camera(config(tmp_path)).status == "ok"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_check_port_free_taken_and_taken_by_this_node(tmp_path: Path, taken_port: int) -> None:
    node = config(tmp_path, thrift_host="127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert check_port(node, "Thrift", free).status == "ok"
    taken = check_port(node, "Thrift", taken_port)
    assert taken.status == "fail" and "in use by another program" in taken.message
    stream = MjpegServer(lambda _cam: b"jpeg", 1, "127.0.0.1", 0)
    stream.start()
    try:
        ours = check_port(node, "MJPEG", stream.port)
    finally:
        stream.stop()
    assert ours.status == "ok" and "this node's running agent" in ours.message
    assert check_port(node, "MJPEG", -1).message == "disabled"


class Identifies:
    """Enough of a CameraServer handler to answer PEPI's identify()."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def identify(self) -> str:
        return self.node_id

    def send_stream(self, conn: object) -> None:
        """No ``stream_image`` here: nothing follows a reply."""

    def drop_stream(self) -> None:
        """Nothing pending to drop."""


@pytest.mark.parametrize(("running", "status"), [("cam01", "ok"), ("cam02", "fail")])
def test_check_port_thrift_taken_by_this_node_or_another(
    tmp_path: Path, running: str, status: str
) -> None:
    server = ThriftServer(Identifies(running), "127.0.0.1", 0)  # type: ignore[arg-type]
    server.start()
    try:
        check = check_port(config(tmp_path, thrift_host="127.0.0.1"), "Thrift", server.port)
    finally:
        server.stop()
    assert check.status == status, check


def test_check_disk_reserve_and_store_limit(tmp_path: Path) -> None:
    assert check_disk(config(tmp_path, max_store_bytes=1, min_free_bytes=0)).status == "ok"
    huge = 10**18
    short = check_disk(config(tmp_path, min_free_bytes=huge))
    assert short.status == "fail" and "reserve" in short.message
    assert check_disk(config(tmp_path, max_store_bytes=huge)).status == "warn"


def test_format_report_names_fixes_and_the_verdict() -> None:
    checks = [Check("camera", "ok", "1 camera(s): imx477"), Check("clock", "fail", "x", "do y")]
    text = format_report("cam01", checks)
    assert "OK    camera" in text and "FAIL  clock" in text and "fix: do y" in text
    assert text.endswith("1 problem(s) to fix before this node is ready")
    assert format_report("cam01", checks[:1]).endswith("ready")
