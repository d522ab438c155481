"""300 idle or slow connections to each of a node's servers (Thrift, MJPEG): it keeps
capturing and serving, and its threads stay under the caps."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.expect import wait_result
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess
from support.pub import mosquitto_pub
from support.thrift_clients import camera_server

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.schemas import CaptureStatus

THRIFT_CAP = 12
STREAM_CAP = 6
SPARE_THREADS = 3
"""Threads a node may have beyond its idle count and the two caps (a capture in flight, a
dropped connection's thread in its last instant)."""
FLOOD = 300
TRICKLE_S = 0.5


def threads(pid: int) -> int:
    """The process's thread count, as the kernel reports it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


class ThreadPeak:
    """Samples a process's thread count in the background; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = threads(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, threads(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class Flood:
    """Connections that never finish a request (``idle``: send nothing; ``slow``: send a
    first fragment, then one byte every TRICKLE_S) or never read a reply (``deaf``)."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self._slow: list[socket.socket] = []
        self._stop = threading.Event()
        self._trickler = threading.Thread(target=self._trickle, daemon=True)

    def open(self, port: int, count: int, first: bytes = b"", slow: bool = False) -> None:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # deaf ones fill fast
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            if first:
                with contextlib.suppress(OSError):
                    sock.sendall(first)
            self.socks.append(sock)
            if slow:
                self._slow.append(sock)

    def start_trickle(self, byte: bytes) -> None:
        self._byte = byte
        self._trickler.start()

    def _trickle(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens to the test
        while not self._stop.wait(TRICKLE_S) and time.monotonic() < deadline:
            for sock in self._slow:
                with contextlib.suppress(OSError):
                    sock.send(self._byte, socket.MSG_DONTWAIT)

    def close(self) -> None:
        self._stop.set()
        if self._trickler.is_alive():
            self._trickler.join()
        for sock in self.socks:
            sock.close()


@pytest.fixture
def flood() -> Iterator[Flood]:
    f = Flood()
    yield f
    f.close()


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.1)


def mjpeg_first_frame(port: int) -> bool:
    """A fresh viewer gets the stream's headers and its first frame."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stream/0.mjpeg")
        response = conn.getresponse()
        if response.status != 200:
            return False
        assert response.getheader("Content-Type", "").startswith("multipart/x-mixed-replace")
        head = response.fp.readline() + response.fp.readline()
        return b"--pepiframe" in head and b"image/jpeg" in head
    except OSError:
        return False
    finally:
        conn.close()


def snapshot(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/snapshot/0.jpg")
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def snapshot_served(port: int) -> bool:
    """A fresh client gets a JPEG snapshot (a 503 while every slot is taken is not yet)."""
    try:
        return snapshot(port)[:2] == b"\xff\xd8"
    except (AssertionError, OSError):
        return False


def test_node_survives_300_idle_or_slow_connections_per_server(
    start_node: Callable[..., NodeProcess],
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    flood: Flood,
) -> None:
    node = start_node(
        None,
        *("--thrift-max-clients", str(THRIFT_CAP), "--stream-max-clients", str(STREAM_CAP)),
        *("--thrift-timeout", "20", "--stream-timeout", "20"),
    )
    assert node.proc is not None
    pid = node.proc.pid
    assert snapshot(node.stream_port)[:2] == b"\xff\xd8"
    with camera_server(node.thrift_port) as server:
        assert server.ping()
    idle_threads = threads(pid)
    peak = ThreadPeak(pid)

    # Thrift: silent connections, and slow ones dribbling a message header
    flood.open(node.thrift_port, FLOOD // 2)
    flood.open(node.thrift_port, FLOOD // 2, first=b"\x80\x01", slow=True)
    # MJPEG: silent, slow-loris (headers that never end), and viewers that never read
    flood.open(node.stream_port, FLOOD // 3)
    request_start = b"GET /stream/0.mjpeg HTTP/1.1\r\nHost: x\r\n"
    flood.open(node.stream_port, FLOOD // 3, first=request_start, slow=True)
    flood.open(node.stream_port, FLOOD // 3, first=request_start + b"\r\n")
    flood.start_trickle(b"x")

    # it keeps capturing...
    mosquitto_pub(broker.port, f"{root}/capture", "under-flood")
    result = wait_result(watcher, root, node.node_id, "under-flood")
    assert result.status == CaptureStatus.OK, result.error
    # ...and serving fresh clients of both servers
    with camera_server(node.thrift_port) as server:
        assert server.ping()
        assert server.identify() == node.node_id
    eventually(lambda: mjpeg_first_frame(node.stream_port), 20, "no MJPEG frame for a new viewer")
    # slots freed by a dropped flood connection go to whoever asks first: the flood too
    eventually(lambda: snapshot_served(node.stream_port), 20, "no snapshot for a new client")

    highest = peak.stop()
    assert highest <= idle_threads + THRIFT_CAP + STREAM_CAP + SPARE_THREADS, (
        f"{highest} threads; idle {idle_threads}, caps {THRIFT_CAP} + {STREAM_CAP}"
    )
    assert node.alive
