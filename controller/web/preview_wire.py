"""The preview WebSocket's messages (``/api/previews/ws``) and the relay's stats models.

Client → server: text JSON ``{"watch": ["cam01/0", …]}`` (the whole watched set).
Server → client: binary frames (2-byte big-endian header length N, N bytes of JSON
``FrameHeader``, the JPEG), text JSON ``{"stats": …}`` every few seconds, and text JSON
``{"error": "…"}`` for a message it refused.
"""

from __future__ import annotations

import json
import struct

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.controller.preview_relay import PreviewFrame, Viewer
from pepi_fleet.schemas.errors import PayloadError

MAX_MESSAGE_CHARS = 64 * 1024
_HEADER_LENGTH = struct.Struct(">H")


class WatchRequest(BaseModel):
    """What a viewer wants to see: every key it names, and nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    watch: list[str] = Field(description="preview keys '<node id>/<camera index>'; [] stops all")


class FrameHeader(BaseModel):
    """The JSON header of a binary frame message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    seq: int = Field(description="the camera's frame number since its pull started")
    dropped: int = Field(description="frames of this key this viewer missed (cumulative)")
    timestamp: float | None = Field(description="when the node took the preview (Unix s)")


class ViewerStatsMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dropped: dict[str, int]
    watching: list[str]


class StatsMessage(BaseModel):
    """Sent every few seconds: what this viewer watches and has missed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stats: ViewerStatsMessage


class ErrorMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    error: str


def parse_watch(text: str, max_keys: int) -> list[str]:
    """The keys of a watch message, de-duplicated in order; PayloadError saying what is wrong."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise PayloadError(f"message over {MAX_MESSAGE_CHARS} characters")
    try:
        request = WatchRequest.model_validate_json(text)
    except ValidationError as exc:
        raise PayloadError(
            'send text JSON {"watch": ["<node id>/<camera index>", ...]}: '
            + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}"
                for e in exc.errors()
            )
        ) from exc
    keys = list(dict.fromkeys(request.watch))
    if len(keys) > max_keys:
        raise PayloadError(
            f"{len(keys)} previews asked for, at most {max_keys} per connection: "
            "watch fewer (e.g. only those on screen)"
        )
    return keys


def encode_frame(frame: PreviewFrame, dropped: int) -> bytes:
    """A binary frame message."""
    header = FrameHeader(
        key=frame.key, seq=frame.seq, dropped=dropped, timestamp=frame.timestamp
    ).model_dump_json()
    head = header.encode()
    return _HEADER_LENGTH.pack(len(head)) + head + frame.jpeg


def decode_frame(message: bytes) -> tuple[FrameHeader, bytes]:
    """A binary frame message's header and JPEG (for clients and tests)."""
    (length,) = _HEADER_LENGTH.unpack_from(message)
    header = FrameHeader.model_validate(json.loads(message[2 : 2 + length]))
    return header, message[2 + length :]


def stats_message(viewer: Viewer) -> str:
    watching = sorted(viewer.watching)
    dropped = {key: viewer.dropped.get(key, 0) for key in watching}
    return StatsMessage(
        stats=ViewerStatsMessage(dropped=dropped, watching=watching)
    ).model_dump_json()


def error_message(text: str) -> str:
    return ErrorMessage(error=text).model_dump_json()


class SourceOut(BaseModel):
    """One camera the relay pulls (read from the relay's ``SourceStats``)."""

    model_config = ConfigDict(from_attributes=True)

    key: str
    node_id: str
    camera: int
    viewers: int
    frames_in: int
    bytes_in: int
    connects: int = Field(description="connections opened to the node for this camera")
    upstream_state: str = Field(
        description="connecting, streaming, backoff, busy (node's slots full) or unavailable"
    )
    error: str | None = Field(description="why the last connection ended or failed")


class ViewerOut(BaseModel):
    """One connected viewer (read from the relay's ``ViewerStats``)."""

    model_config = ConfigDict(from_attributes=True)

    viewer: str
    kind: str = Field(description="ws, mjpeg or snapshot")
    user: str | None
    watching: list[str]
    taken: int = Field(description="frames handed to this viewer")
    dropped: dict[str, int] = Field(description="frames it missed, per key (cumulative)")


class RelayStatsOut(BaseModel):
    """``GET /api/previews/stats``."""

    sources: list[SourceOut]
    viewers: list[ViewerOut]
