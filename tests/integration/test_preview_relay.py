"""The controller's preview relay with a real controller, real nodes (synthetic cameras) and
a real mosquitto: MJPEG, snapshots and the multiplexed WebSocket, one pull per camera."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.controllers import ControllerProcess
from support.nodes import NodeProcess, node_process
from support.web import (
    add_token,
    add_user,
    controller_process,
    wait_nodes,
    wait_ready,
    wait_until,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.web.preview_wire import FrameHeader, decode_frame

JPEG_START = b"\xff\xd8"
LINGER_S = 1.0
VIEWER_PASSWORD = "viewer-pass-1"


@dataclass
class Rig:
    controller: ControllerProcess
    nodes: dict[str, NodeProcess]

    @property
    def url(self) -> str:
        return self.controller.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/previews/ws"

    def stats(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        res = httpx.get(f"{self.url}/api/previews/stats", timeout=10, headers=headers)
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def source(self, key: str) -> dict[str, Any] | None:
        return next((s for s in self.stats()["sources"] if s["key"] == key), None)


def upstream_connections(node: NodeProcess) -> int:
    """Established TCP connections on the node's MJPEG port, counted on the node's side."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == node.stream_port and fields[3] == "01":  # ESTABLISHED
                count += 1
    return count


def start_rig(
    broker: EmbeddedBroker, base: Path, *controller_args: str, cameras: tuple[int, ...] = (2, 1)
) -> tuple[ControllerProcess, dict[str, NodeProcess]]:
    root = f"pepi-t/{uuid.uuid4().hex[:10]}"
    nodes = {}
    for i, count in enumerate(cameras):
        node_id = f"pv{i}-{uuid.uuid4().hex[:4]}"
        nodes[node_id] = node_process(
            broker, root, node_id, base, "--camera-count", str(count), "--resolution", "320x240"
        )
    ctl = controller_process(
        broker, root, base, "--preview-linger", str(LINGER_S), *controller_args
    )
    return ctl, nodes


@pytest.fixture(scope="module")
def rig(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A controller on loopback (no login) and two nodes: one with 2 cameras, one with 1."""
    ctl, nodes = start_rig(broker, tmp_path_factory.mktemp("relay"), "--preview-max-watch", "3")
    try:
        for node in nodes.values():
            node.start()
        wait_ready(ctl.start())
        with httpx.Client(base_url=ctl.url, timeout=10) as client:
            wait_nodes(client, set(nodes))
        yield Rig(ctl, nodes)
    finally:
        ctl.stop()
        for node in nodes.values():
            node.stop()


class PartReader:
    """Reads the JPEGs of one multipart/x-mixed-replace response, part by part (one byte
    iterator for the whole response: dropping an httpx iterator closes the connection)."""

    def __init__(self, stream: httpx.Response) -> None:
        self.boundary = stream.headers["content-type"].split("boundary=", 1)[1].encode()
        self.chunks = stream.iter_bytes()
        self.buffer = b""

    def read(self, count: int) -> list[bytes]:
        parts: list[bytes] = []
        while len(parts) < count:
            part = self._next_part()
            if part is None:
                self.buffer += next(self.chunks)
            else:
                parts.append(part)
        return parts

    def _next_part(self) -> bytes | None:
        start = self.buffer.find(b"--" + self.boundary + b"\r\n")
        head_end = self.buffer.find(b"\r\n\r\n", start)
        if start < 0 or head_end < 0:
            return None
        head = self.buffer[start:head_end].decode()
        assert "Content-Type: image/jpeg" in head
        length = int(head.split("Content-Length: ", 1)[1].split("\r\n", 1)[0])
        body_start = head_end + 4
        if len(self.buffer) < body_start + length:
            return None
        part = self.buffer[body_start : body_start + length]
        self.buffer = self.buffer[body_start + length :]
        return part


def first_node(rig: Rig, cameras: int = 2) -> NodeProcess:
    return list(rig.nodes.values())[0 if cameras == 2 else 1]


def recv_json(ws: ClientConnection, key: str, timeout: float = 10) -> dict[str, Any]:
    """The next text message that has ``key`` (frames in between are skipped)."""
    while True:
        message = ws.recv(timeout=timeout)
        if isinstance(message, str) and key in (body := json.loads(message)):
            return dict(body)


def recv_frames(ws: ClientConnection, keys: set[str], timeout: float = 10) -> dict[str, Any]:
    """Until a frame of every key in ``keys`` came: key -> (header, jpeg) of its latest."""
    seen: dict[str, Any] = {}
    while not keys <= seen.keys():
        message = ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            header, jpeg = decode_frame(message)
            seen[header.key] = (header, jpeg)
    return seen


def test_relay_streams_mjpeg_in_the_nodes_framing(rig: Rig) -> None:
    node = first_node(rig)
    with httpx.stream("GET", f"{rig.url}/api/previews/{node.node_id}/1.mjpg", timeout=10) as res:
        assert res.status_code == 200
        assert res.headers["content-type"] == "multipart/x-mixed-replace; boundary=pepiframe"
        parts = PartReader(res).read(3)
    assert all(p.startswith(JPEG_START) and p.endswith(b"\xff\xd9") for p in parts)


def test_relay_snapshot_is_the_newest_jpeg_and_unknown_cameras_are_404(rig: Rig) -> None:
    node = first_node(rig, cameras=1)
    res = httpx.get(f"{rig.url}/api/previews/{node.node_id}/0.jpg", timeout=10)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/jpeg"
    assert res.content.startswith(JPEG_START)
    assert float(res.headers["x-timestamp"]) > 1.7e9
    for path, status, words in (
        (f"{node.node_id}/1.jpg", 404, "1 camera"),
        ("nosuchnode/0.jpg", 404, "no node"),
        (f"{node.node_id}/3.mjpg", 404, "1 camera"),
        ("Bad..Node/0.jpg", 422, "node_id"),
    ):
        res = httpx.get(f"{rig.url}/api/previews/{path}", timeout=10)
        assert res.status_code == status, (path, res.text)
        assert words in res.json()["detail"], res.text


def test_relay_pulls_each_camera_once_for_many_viewers_and_stops_after_the_last(
    rig: Rig,
) -> None:
    node = first_node(rig)
    key = f"{node.node_id}/0"
    url = f"{rig.url}/api/previews/{key}.mjpg"
    wait_until(lambda: upstream_connections(node) == 0, 10, "no stream connections at first")
    with (
        httpx.Client(timeout=10) as a,
        httpx.Client(timeout=10) as b,
        a.stream("GET", url) as first,
        b.stream("GET", url) as second,
        connect(rig.ws_url) as ws,
    ):
        ws.send(json.dumps({"watch": [key]}))
        readers = [PartReader(first), PartReader(second)]  # held: the streams stay open
        for reader in readers:
            reader.read(2)
        recv_frames(ws, {key})
        source = rig.source(key)
        assert source is not None
        assert (source["viewers"], source["connects"]) == (3, 1), source
        assert source["upstream_state"] == "streaming"
        assert source["frames_in"] >= 2 and source["bytes_in"] > 0
        assert upstream_connections(node) == 1
    wait_until(lambda: rig.source(key) is None, 10 + LINGER_S, "the relay to drop the camera")
    wait_until(lambda: upstream_connections(node) == 0, 10, "the node's stream connection to end")


def test_websocket_multiplexes_cameras_and_reports_stats(rig: Rig) -> None:
    big, small = list(rig.nodes)
    keys = {f"{big}/0", f"{big}/1", f"{small}/0"}
    with connect(rig.ws_url) as ws:
        ws.send(json.dumps({"watch": sorted(keys)}))
        frames = recv_frames(ws, keys)
        for key, (header, jpeg) in frames.items():
            assert header.key == key and header.seq >= 1 and header.dropped >= 0
            assert header.timestamp is not None and jpeg.startswith(JPEG_START)
        stats = recv_json(ws, "stats")["stats"]
        assert sorted(stats["watching"]) == sorted(keys) and set(stats["dropped"]) == keys
        viewers = [v for v in rig.stats()["viewers"] if v["kind"] == "ws"]
        assert any(sorted(v["watching"]) == sorted(keys) for v in viewers), viewers

        ws.send(json.dumps({"watch": [f"{small}/0"]}))  # replaces the set
        assert recv_json(ws, "stats")["stats"]["watching"] == [f"{small}/0"]
        seen = {decode_frame(m)[0].key for m in _binary(ws, 8)}
        assert seen == {f"{small}/0"}

        ws.send(json.dumps({"watch": []}))
        assert recv_json(ws, "stats")["stats"]["watching"] == []


def _binary(ws: ClientConnection, count: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < count:
        message = ws.recv(timeout=10)
        if isinstance(message, bytes):
            out.append(message)
    return out


def test_websocket_answers_bad_messages_with_an_error_and_stays_open(rig: Rig) -> None:
    node = first_node(rig, cameras=1)
    key = f"{node.node_id}/0"
    with connect(rig.ws_url) as ws:
        ws.send(json.dumps({"watch": [key]}))
        recv_frames(ws, {key})
        for message, words in (
            ("not json", "watch"),
            (json.dumps({"watch": "cam01/0"}), "watch"),
            (json.dumps({"watch": [key], "extra": 1}), "extra"),
            (json.dumps({"watch": ["../etc/0"]}), "preview key"),
            (json.dumps({"watch": [f"{key[:-1]}{n}" for n in range(4)]}), "at most 3"),
            (b"\x00binary", "not binary"),
        ):
            ws.send(message)
            error = recv_json(ws, "error")["error"]
            assert words in error, (message, error)
        recv_frames(ws, {key})  # still watching what it watched before the refused messages
        ws.send(json.dumps({"watch": [key, "nosuchnode/0", f"{node.node_id}/5"]}))
        error = recv_json(ws, "error")["error"]
        assert "nosuchnode" in error and "1 camera" in error
        assert recv_json(ws, "stats")["stats"]["watching"] == [key]


@pytest.fixture(scope="module")
def auth_rig(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Rig, str]]:
    """A controller that requires a login, one 1-camera node, and a viewer's API token."""
    ctl, nodes = start_rig(broker, tmp_path_factory.mktemp("relay-auth"), "--auth", "on",
                           cameras=(1,))  # fmt: skip
    token = add_token(ctl.data_dir, "wall", "viewer")
    add_user(ctl.data_dir, "vic", "viewer", VIEWER_PASSWORD)
    try:
        for node in nodes.values():
            node.start()
        wait_ready(ctl.start(), token=token)
        with httpx.Client(
            base_url=ctl.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            wait_nodes(client, set(nodes))
        yield Rig(ctl, nodes), token
    finally:
        ctl.stop()
        for node in nodes.values():
            node.stop()


def test_relay_lets_viewers_watch_and_refuses_everyone_else(auth_rig: tuple[Rig, str]) -> None:
    rig, token = auth_rig
    key = f"{next(iter(rig.nodes))}/0"
    bearer = {"Authorization": f"Bearer {token}"}
    res = httpx.get(f"{rig.url}/api/previews/{key}.jpg", timeout=10, headers=bearer)
    assert res.status_code == 200 and res.content.startswith(JPEG_START)
    for path in (f"{key}.jpg", f"{key}.mjpg", "stats"):
        res = httpx.get(f"{rig.url}/api/previews/{path}", timeout=10)
        assert res.status_code == 401, (path, res.text)
    with connect(rig.ws_url, additional_headers=bearer, origin=Origin(rig.url)) as ws:
        ws.send(json.dumps({"watch": [key]}))
        recv_frames(ws, {key})
        viewers = rig.stats(bearer)["viewers"]
        assert [(v["kind"], v["user"], v["watching"]) for v in viewers] == [("ws", "wall", [key])]
    with pytest.raises(InvalidStatus) as refused, connect(rig.ws_url):
        pass
    assert refused.value.response.status_code == 401
    assert b"log in" in refused.value.response.body
    with (
        pytest.raises(InvalidStatus) as foreign,
        connect(rig.ws_url, additional_headers=bearer, origin=Origin("http://evil.example")),
    ):
        pass
    assert foreign.value.response.status_code == 403


def test_relay_websocket_takes_a_viewers_session_from_the_page(auth_rig: tuple[Rig, str]) -> None:
    """What the page does: log in as a viewer, then open the socket with the session cookie
    from the page's own origin."""
    rig, _token = auth_rig
    key = f"{next(iter(rig.nodes))}/0"
    with httpx.Client(base_url=rig.url, timeout=10) as client:
        res = client.post(
            "/api/login",
            json={"username": "vic", "password": VIEWER_PASSWORD},
            headers={"Origin": rig.url},
        )
        assert res.status_code == 200, res.text
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    with connect(rig.ws_url, additional_headers={"Cookie": cookie}, origin=Origin(rig.url)) as ws:
        ws.send(json.dumps({"watch": [key]}))
        header, jpeg = recv_frames(ws, {key})[key]
        assert header.key == key and jpeg.startswith(JPEG_START)


def slow_socket(url: str) -> socket.socket:
    """A connected TCP socket that takes little into its receive buffer: a viewer on a bad
    link (once it stops reading, the controller's sends to it block within a few frames)."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def viewer_stats(rig: Rig, kind: str, key: str) -> list[dict[str, Any]]:
    return [v for v in rig.stats()["viewers"] if v["kind"] == kind and key in v["watching"]]


class Reader(threading.Thread):
    """Reads a viewer's socket without pause, keeping every frame header it got."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(daemon=True)
        self.ws = ws
        self.headers: list[FrameHeader] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                message = self.ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                self.headers.append(decode_frame(message)[0])

    def newest(self) -> FrameHeader | None:
        return self.headers[-1] if self.headers else None


def test_a_viewer_that_stops_reading_slows_neither_the_node_nor_other_viewers(rig: Rig) -> None:
    node = first_node(rig, cameras=1)
    key = f"{node.node_id}/0"
    every = {f"{n}/{c}" for n, count in zip(rig.nodes, (2, 1), strict=True) for c in range(count)}
    with (
        connect(rig.ws_url, sock=slow_socket(rig.url), max_queue=1, ping_interval=None) as slow,
        connect(rig.ws_url) as fast,
    ):
        slow.send(json.dumps({"watch": sorted(every)}))  # every camera: its buffers fill sooner
        fast.send(json.dumps({"watch": [key]}))
        stalled_at = recv_frames(slow, every)[key][0].seq
        reader = Reader(fast)
        reader.start()
        try:
            # the slow viewer reads nothing from here on; the fast one reads all the time
            wait_until(
                lambda: any(v["dropped"].get(key, 0) >= 5 for v in viewer_stats(rig, "ws", key)),
                90,
                "the relay to drop frames for the viewer that stopped reading",
            )
            source = rig.source(key)
            assert source is not None
            target = source["frames_in"] + 8
            wait_until(  # the node's frames keep coming in ...
                lambda: (rig.source(key) or {"frames_in": 0})["frames_in"] >= target,
                30,
                "8 more frames from the node while a viewer is stalled",
            )
            before = reader.newest()
            assert before is not None
            wait_until(  # ... and going out to the viewer that reads
                lambda: (reader.newest() or before).seq >= target, 30, "the reading viewer's frames"
            )
            after = reader.newest()
            assert after is not None and after.dropped - before.dropped < 8
        finally:
            reader.stopping.set()
            reader.join(5)
        # reading again, the stalled viewer gets what the network still held, then the
        # newest frames: the relay kept only the newest for it, and skipped the rest
        newest = rig.source(key)["frames_in"]  # type: ignore[index]
        seqs = [stalled_at]
        while seqs[-1] < newest:
            header = decode_frame(_binary(slow, 1)[0])[0]
            if header.key == key:
                seqs.append(header.seq)
        assert max(b - a for a, b in itertools.pairwise(seqs)) > 1, seqs
