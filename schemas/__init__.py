"""Contracts shared by node agents and the controller: payload models, ids, topics."""

from __future__ import annotations

from schemas.capture import (
    CaptureCommand,
    CaptureResult,
    CaptureStatus,
    Frame,
    ImageFormat,
    auto_capture_id,
    parse_capture_command,
)
from schemas.clock import ClockPing, ClockPong
from schemas.controller import CaptureSetSummary, NodeOutcome
from schemas.errors import CameraError, PayloadError, PepiError, StoreError
from schemas.ids import validate_capture_id, validate_node_id
from schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeSettings,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)
from schemas.topics import TopicKind, Topics

__all__ = [
    "CameraError",
    "CameraInfo",
    "CaptureCommand",
    "CaptureResult",
    "CaptureSetSummary",
    "CaptureStatus",
    "ClockInfo",
    "ClockPing",
    "ClockPong",
    "Frame",
    "ImageFormat",
    "NodeOutcome",
    "NodeSettings",
    "NodeStatus",
    "PayloadError",
    "PepiError",
    "StoreError",
    "StoreInfo",
    "ThriftEndpoint",
    "TopicKind",
    "Topics",
    "auto_capture_id",
    "parse_capture_command",
    "validate_capture_id",
    "validate_node_id",
]
