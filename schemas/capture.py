"""Capture command and result payloads, and the one parser for all three command forms."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import validate_capture_id, validate_node_id
from pepi_fleet.schemas.nesting import check_nesting

MAX_COMMAND_BYTES = 4096
"""Capture commands are tiny; anything larger is refused before parsing."""

LATEST_AT = 4_102_444_800.0
"""2100-01-01T00:00:00Z: no ``at`` is later than this (milliseconds sent as seconds are)."""
DEFAULT_SCHEDULE_HORIZON_S = 24 * 3600.0
"""How far ahead a node arms a scheduled capture unless configured otherwise."""
TOO_FAR_AHEAD = "at too far ahead"

ImageFormat = Literal["jpeg", "png", "raw"]

# file name extension of each stored format (raw frames are numpy .npy arrays)
FILE_EXTENSIONS: dict[str, str] = {"jpeg": "jpeg", "png": "png", "raw": "npy"}
CaptureId = Annotated[str, AfterValidator(validate_capture_id)]
NodeId = Annotated[str, AfterValidator(validate_node_id)]


def _valid_at(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if value < 0:
        raise ValueError("must be Unix seconds (not negative)")
    if value > LATEST_AT:
        raise ValueError(
            f"{TOO_FAR_AHEAD}: {value:.6g} is after the year 2100; "
            "give Unix seconds (not milliseconds), e.g. 1763712000.25"
        )
    return value


def schedule_too_far_ahead(at: float | None, now: float, horizon_s: float) -> str | None:
    """Why ``at`` is further than ``horizon_s`` ahead of ``now``; None when it is not."""
    if at is None or at - now <= horizon_s:
        return None
    return (
        f"{TOO_FAR_AHEAD}: {at - now:.0f} s from now; captures are scheduled at most "
        f"{horizon_s:.0f} s ahead (check the sender's clock, or raise --schedule-horizon)"
    )


class CaptureCommand(BaseModel):
    """What the trigger topics carry. Every field is optional."""

    # strict: JSON true is not the number 1, "123.5" is not a time
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    capture_id: CaptureId | None = None
    at: Annotated[float | None, AfterValidator(_valid_at)] = Field(
        default=None,
        description="Unix time (s) to fire at on the node's clock; absent = now. A node refuses "
        "an 'at' further ahead than its schedule horizon (default 24 h) with an error result",
    )
    cameras: list[Annotated[int, Field(ge=0, le=15)]] | None = Field(
        default=None, min_length=1, max_length=16, description="camera indexes; absent = all"
    )
    format: ImageFormat = "jpeg"


class CaptureStatus(StrEnum):
    """Outcome of one capture command on one node."""

    OK = "ok"
    LATE = "late"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    STORE_FULL = "store_full"
    ERROR = "error"


class Frame(BaseModel):
    """One stored image of one camera."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: int = Field(ge=0)
    timestamp: float = Field(description="wall clock (Unix s) of the frame on the node")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    format: ImageFormat
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    in_sync: bool | None = Field(
        default=None,
        description="taken while the camera was frame-locked (libcamera SyncReady); "
        "null: the camera does not use frame sync",
    )
    controls: CameraControls | None = Field(
        default=None, description="exposure, gain, white balance, focus applied to this frame"
    )


class CaptureResult(BaseModel):
    """One per capture command per node, on ``nodes/<node>/result``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: NodeId
    capture_id: CaptureId | None = Field(
        description="null only when the command was unreadable and carried no usable id"
    )
    status: CaptureStatus
    received_at: float
    fired_at: float | None = None
    at: float | None = Field(default=None, description="the requested fire time, if any")
    frames: list[Frame] = Field(default_factory=list)
    error: str | None = None
    source: Literal["mqtt", "thrift"] = "mqtt"
    expiry_remaining_s: float | None = Field(
        default=None,
        description="MQTT 5 message expiry left when the node received the trigger (s); the "
        "sender's expiry minus this is how long the trigger was under way. Null: no expiry",
    )


def auto_capture_id(received_at: float) -> str:
    """The id a node gives an id-less trigger: ``auto-<UTC receipt time to the ms>``."""
    stamp = datetime.fromtimestamp(received_at, UTC)
    return "auto-" + stamp.strftime("%Y%m%dT%H%M%S") + f"{stamp.microsecond // 1000:03d}Z"


def parse_capture_command(payload: bytes) -> CaptureCommand:
    """Parse any of the three command forms: JSON object, plain id token, empty/``{}``.

    Raises PayloadError with a one-line reason for anything else.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise PayloadError(
            f"capture command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}"
        )
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise PayloadError("capture command is not UTF-8 text") from exc
    if not text:
        return CaptureCommand()
    if text[0] in '{["':
        return _parse_json_command(text)
    return CaptureCommand(capture_id=validate_capture_id(text))


def is_plain_token(payload: bytes) -> bool:
    """True for the plain-text form (``scan-042``), which buttons repeat on every press."""
    text = payload.strip()
    return bool(text) and text[:1] not in (b"{", b"[", b'"')


def _parse_json_command(text: str) -> CaptureCommand:
    check_nesting(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"capture command is not valid JSON: {exc.msg} at char {exc.pos}"
        ) from exc
    if isinstance(data, str):
        return CaptureCommand(capture_id=validate_capture_id(data))
    if not isinstance(data, dict):
        raise PayloadError("capture command JSON must be an object, a string id, or empty")
    try:
        return CaptureCommand.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and why."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
