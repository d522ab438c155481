"""The preview WebSocket's messages and which stream URL the relay may pull for a camera."""

from __future__ import annotations

import json

import pytest

from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.controller.preview_relay import (
    PreviewFrame,
    PreviewUnavailable,
    PreviewUnknown,
    Viewer,
)
from pepi_fleet.controller.preview_streams import stream_url
from pepi_fleet.controller.web.preview_wire import (
    decode_frame,
    encode_frame,
    error_message,
    parse_watch,
    stats_message,
)
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)


def test_frame_message_is_length_prefixed_json_then_jpeg() -> None:
    frame = PreviewFrame("cam01/1", 42, b"\xff\xd8jpeg\xff\xd9", 1763712000.25)
    message = encode_frame(frame, dropped=3)
    length = int.from_bytes(message[:2], "big")
    assert json.loads(message[2 : 2 + length]) == {
        "key": "cam01/1",
        "seq": 42,
        "dropped": 3,
        "timestamp": 1763712000.25,
    }
    assert message[2 + length :] == frame.jpeg
    header, jpeg = decode_frame(encode_frame(PreviewFrame("a/0", 1, b"x", None), 0))
    assert (header.timestamp, jpeg) == (None, b"x")


def test_parse_watch_keeps_order_and_drops_repeats() -> None:
    assert parse_watch('{"watch": ["b/0", "a/1", "b/0"]}', 3) == ["b/0", "a/1"]
    assert parse_watch('{"watch": []}', 3) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nope", "watch"),
        ('["a/0"]', "watch"),
        ('{"watch": "a/0"}', "watch"),
        ('{"watch": [1]}', "watch.0"),
        ('{"watch": [], "more": 1}', "more"),
        ('{"watch": ["a/0", "a/1", "a/2", "a/3"]}', "at most 3"),
        ('{"watch": ["' + "a" * 70_000 + '"]}', "characters"),
    ],
)
def test_parse_watch_refuses_bad_messages_saying_why(text: str, words: str) -> None:
    with pytest.raises(PayloadError, match=words):
        parse_watch(text, 3)


def test_stats_and_error_messages() -> None:
    viewer = Viewer("ws-1", "ws")
    viewer.watching = frozenset({"b/0", "a/0"})
    viewer.dropped = {"a/0": 2, "gone/0": 9}
    assert json.loads(stats_message(viewer)) == {
        "stats": {"dropped": {"a/0": 2, "b/0": 0}, "watching": ["a/0", "b/0"]}
    }
    assert json.loads(error_message("bad")) == {"error": "bad"}


def view(state: NodeState = NodeState.ONLINE, urls: list[str] | None = None) -> NodeView:
    cameras = [
        CameraInfo(index=i, model="synthetic", resolution=(640, 480), max_resolution=(640, 480))
        for i in range(2)
    ]
    status = NodeStatus(
        node_id="cam01",
        sent_at=0.0,
        heartbeat_s=5,
        version="0",
        thrift=ThriftEndpoint(host="cam01", port=6000),
        cameras=cameras,
        stream_urls=urls if urls is not None else [
            "http://cam01:6001/stream/0.mjpeg", "http://cam01:6001/stream/1.mjpeg"
        ],
        store=StoreInfo(captures=0, bytes=0, free_bytes=1),
        clock=ClockInfo(synced=True),
    )  # fmt: skip
    return NodeView("cam01", state, status, 0.0, 0.0)


def test_stream_url_is_the_cameras_advertised_stream() -> None:
    assert stream_url("cam01", 1, view()) == "http://cam01:6001/stream/1.mjpeg"


@pytest.mark.parametrize(
    ("camera", "node", "error", "words"),
    [
        (0, None, PreviewUnknown, "no node"),
        (0, view(NodeState.REMOVED), PreviewUnknown, "no node"),
        (2, view(), PreviewUnknown, "indexes 0-1"),
        (0, view(urls=[]), PreviewUnknown, "no preview stream"),
        (0, view(NodeState.OFFLINE), PreviewUnavailable, "offline"),
        (0, view(urls=["http://10.0.0.9:80/admin"]), PreviewUnavailable, "own address"),
        (0, view(urls=["file:///etc/passwd"]), PreviewUnavailable, "own address"),
    ],
)
def test_stream_url_refuses_what_the_relay_must_not_pull(
    camera: int, node: NodeView | None, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        stream_url("cam01", camera, node)
