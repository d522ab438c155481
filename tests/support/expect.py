"""Waiting for and checking node results in tests."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from PIL import Image

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.node.encode import read_exif_timestamp
from pepi_fleet.schemas import CaptureResult, CaptureStatus
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess
from support.pub import mosquitto_pub
from support.thrift_clients import fleet_server


def wait_result(
    watcher: Watcher,
    root: str,
    node: str,
    capture_id: str | None = None,
    status: CaptureStatus | None = None,
    after: float = 0.0,
) -> CaptureResult:
    """The node's next result matching the given id/status."""

    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/nodes/{node}/result" or seen.at < after:
            return False
        result = CaptureResult.model_validate_json(seen.payload)
        return (capture_id is None or result.capture_id == capture_id) and (
            status is None or result.status == status
        )

    seen = watcher.wait_for(match, what=f"result {capture_id} {status}")
    return CaptureResult.model_validate_json(seen.payload)


def capture_ok(
    broker: EmbeddedBroker, root: str, watcher: Watcher, node: str, capture_id: str
) -> CaptureResult:
    """Trigger ``capture_id`` on the whole fleet; ``node``'s result, which must be ok."""
    mosquitto_pub(broker.port, f"{root}/capture", capture_id)
    result = wait_result(watcher, root, node, capture_id)
    assert result.status is CaptureStatus.OK, result.error
    return result


@contextmanager
def loses_nothing(
    broker: EmbeddedBroker, root: str, watcher: Watcher, node: NodeProcess
) -> Iterator[None]:
    """Around bad input: the node captures before and after it, stays up, and still serves
    the capture taken before intact."""
    kept = capture_ok(broker, root, watcher, node.node_id, "kept")
    yield
    capture_ok(broker, root, watcher, node.node_id, "after")
    assert node.alive
    assert_retrievable(node, kept)


def assert_retrievable(node: NodeProcess, result: CaptureResult) -> None:
    """Every frame of an ok result can be fetched and matches its sha256 and EXIF time."""
    assert result.status == CaptureStatus.OK, result.error
    assert result.frames
    with fleet_server(node.thrift_port, node.data_dir) as server:
        for frame in result.frames:
            blob = server.fetch_image(result.capture_id, frame.camera, frame.format)
            assert hashlib.sha256(blob.data).hexdigest() == frame.sha256 == blob.sha256
            assert Image.open(io.BytesIO(blob.data)).format == "JPEG"
            assert read_exif_timestamp(blob.data) == pytest.approx(frame.timestamp, abs=1e-6)
