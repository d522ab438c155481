"""Real captures put straight into a node's store: the synthetic chart encoded as the node
encodes it, for tests that serve them over Thrift without a running agent."""

from __future__ import annotations

from pepi_fleet.core.thrift_map import capture_info, result_of
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.encode import encode_frame
from pepi_fleet.node.store import CaptureStore, StoredCapture
from pepi_fleet.schemas.capture import CaptureResult, Frame


def store_capture(
    store: CaptureStore,
    node_id: str,
    capture_id: str,
    at: float,
    resolution: tuple[int, int] = (640, 480),
) -> CaptureResult:
    """Camera 0's frame of ``capture_id`` taken at ``at``, committed to ``store``; the result
    the node would publish for it."""
    camera = SyntheticCamera(node_id, resolution=resolution, clock=lambda: at, sleep=lambda s: None)
    (captured,) = camera.capture([0], capture_id, None)
    encoded = encode_frame(captured, "jpeg", node_id=node_id, capture_id=capture_id)
    frame = Frame(
        camera=0,
        timestamp=captured.timestamp,
        width=encoded.width,
        height=encoded.height,
        format="jpeg",
        bytes=len(encoded.data),
        sha256=encoded.sha256,
    )
    stored = StoredCapture(
        capture_id=capture_id, received_at=at, fired_at=at, frames=[frame], stored_at=at
    )
    store.reserve(capture_id)
    store.commit(stored, {0: encoded.data})
    held = store.get(capture_id)
    assert held is not None
    return result_of(node_id, capture_info(held))
