"""Thrift structs <-> pydantic models, both ways, in one place (Thrift types stay on this side)."""

from __future__ import annotations

from typing import Any, Protocol

from pepi_fleet.core.idl import load
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus, Frame


class HeldCapture(Protocol):
    """What the node keeps about one capture (its store's metadata)."""

    @property
    def capture_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def fired_at(self) -> float: ...
    @property
    def frames(self) -> list[Frame]: ...
    @property
    def retrieved(self) -> bool: ...


def frame_info(frame: Frame) -> Any:
    """A ``FrameInfo`` struct of one stored frame."""
    return load().FrameInfo(
        camera=frame.camera,
        timestamp=frame.timestamp,
        width=frame.width,
        height=frame.height,
        format=frame.format,
        size=frame.bytes,
        sha256=frame.sha256,
    )


def capture_info(capture: HeldCapture) -> Any:
    """A ``CaptureInfo`` struct of one held capture."""
    return load().CaptureInfo(
        capture_id=capture.capture_id,
        received_at=capture.received_at,
        fired_at=capture.fired_at,
        frames=[frame_info(f) for f in capture.frames],
        retrieved=capture.retrieved,
        source=capture.source,
    )


def frame_of(info: Any) -> Frame:
    """The ``Frame`` a ``FrameInfo`` describes (raises pydantic's ValidationError if unreadable)."""
    return Frame(
        camera=info.camera,
        timestamp=info.timestamp,
        width=info.width,
        height=info.height,
        format=info.format,
        bytes=info.size,
        sha256=info.sha256,
    )


def result_of(node_id: str, info: Any) -> CaptureResult:
    """The ok ``CaptureResult`` a node published (or should have) for a ``CaptureInfo``."""
    return CaptureResult(
        node_id=node_id,
        capture_id=info.capture_id,
        status=CaptureStatus.OK,
        received_at=info.received_at,
        fired_at=info.fired_at,
        frames=[frame_of(f) for f in info.frames or []],
        source="thrift" if info.source == "thrift" else "mqtt",
    )
