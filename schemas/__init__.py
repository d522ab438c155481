"""Contracts shared by node agents and the controller: payload models, ids, topics."""

from __future__ import annotations

from pepi_fleet.schemas.capture import (
    CaptureCommand,
    CaptureResult,
    CaptureStatus,
    Frame,
    ImageFormat,
    auto_capture_id,
    parse_capture_command,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.controller import CaptureSetSummary, NodeOutcome
from pepi_fleet.schemas.errors import CameraError, PayloadError, PepiError, StoreError
from pepi_fleet.schemas.ids import validate_capture_id, validate_node_id
from pepi_fleet.schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeSettings,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)
from pepi_fleet.schemas.topics import TopicKind, Topics

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
