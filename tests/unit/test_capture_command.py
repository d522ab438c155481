"""Capture command parsing (all three forms and every refusal), auto ids, result/status payloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pepi_fleet.schemas.capture import (
    DEFAULT_SCHEDULE_HORIZON_S,
    MAX_COMMAND_BYTES,
    CaptureCommand,
    CaptureResult,
    CaptureStatus,
    Frame,
    auto_capture_id,
    is_plain_token,
    parse_capture_command,
    schedule_too_far_ahead,
)
from pepi_fleet.schemas.clock import ClockPing
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import is_capture_id
from pepi_fleet.schemas.status import MAX_FPS, NodeSettings, NodeStatus

T0 = 1_763_712_000.25  # 2025-11-21T08:00:00.250Z
SHA = "ab" * 32


# -- the three forms ----------------------------------------------------------------------------


def test_parse_capture_command_json_object_with_every_field() -> None:
    cmd = parse_capture_command(
        b'{"capture_id": "scan-042", "at": 1763712000.250, "cameras": [0, 2], "format": "png"}'
    )
    assert cmd == CaptureCommand(capture_id="scan-042", at=T0, cameras=[0, 2], format="png")


def test_parse_capture_command_json_object_fields_default_when_absent() -> None:
    cmd = parse_capture_command(b'{"capture_id": "scan-042"}')
    assert (cmd.capture_id, cmd.at, cmd.cameras, cmd.format) == ("scan-042", None, None, "jpeg")


@pytest.mark.parametrize(
    ("payload", "capture_id"),
    [
        (b"scan-042", "scan-042"),
        (b"42", "42"),  # PEPI-style numeric data code
        (b"  scan-042\n", "scan-042"),  # mosquitto_pub -l / echo adds a newline
        (b"Scan_7.v2", "Scan_7.v2"),
    ],
)
def test_parse_capture_command_plain_token_is_the_capture_id(
    payload: bytes, capture_id: str
) -> None:
    assert parse_capture_command(payload) == CaptureCommand(capture_id=capture_id)


@pytest.mark.parametrize("payload", [b"", b"   \n", b"{}", b" { } "])
def test_parse_capture_command_empty_or_empty_object_has_no_id(payload: bytes) -> None:
    cmd = parse_capture_command(payload)
    assert cmd.capture_id is None
    assert cmd.at is None


def test_parse_capture_command_json_string_is_the_capture_id() -> None:
    assert parse_capture_command(b'"scan-1"').capture_id == "scan-1"


def test_parse_capture_command_null_capture_id_means_automatic() -> None:
    assert parse_capture_command(b'{"capture_id": null}').capture_id is None


def test_parse_capture_command_accepts_exactly_the_size_limit() -> None:
    payload = b'{"capture_id": "scan-1"}'
    payload += b" " * (MAX_COMMAND_BYTES - len(payload))
    assert len(payload) == MAX_COMMAND_BYTES
    assert parse_capture_command(payload).capture_id == "scan-1"


def test_parse_capture_command_accepts_a_64_char_id() -> None:
    capture_id = "a" * 64
    assert parse_capture_command(capture_id.encode()).capture_id == capture_id


# -- refusals -----------------------------------------------------------------------------------


def _error(payload: bytes) -> str:
    with pytest.raises(PayloadError) as info:
        parse_capture_command(payload)
    return str(info.value)


@pytest.mark.parametrize("payload", [b"{", b'{"capture_id": "x",}', b'["scan-1"', b'"scan-1'])
def test_parse_capture_command_invalid_json_names_json(payload: bytes) -> None:
    assert "not valid JSON" in _error(payload)


def test_parse_capture_command_unknown_field_is_named() -> None:
    message = _error(b'{"capture_id": "scan-1", "delay": 2}')
    assert "delay" in message
    assert "unknown field" in message


@pytest.mark.parametrize(
    "capture_id", ["../x", "a/b", ".hidden", "-dash", "a b", "x" * 65, "scan.", "..", "é"]
)
def test_parse_capture_command_unsafe_plain_id_is_refused(capture_id: str) -> None:
    message = _error(capture_id.encode())
    assert "invalid capture id" in message


@pytest.mark.parametrize("capture_id", ["../x", "a/b", ".hidden", "x" * 65, ""])
def test_parse_capture_command_unsafe_id_in_json_is_refused(capture_id: str) -> None:
    as_object = f'{{"capture_id": "{capture_id}"}}'.encode()
    as_string = f'"{capture_id}"'.encode()
    assert "invalid capture id" in _error(as_object)
    assert "invalid capture id" in _error(as_string)


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"scan-\xe9", b'{"capture_id": "\xc3"}'])
def test_parse_capture_command_non_utf8_is_refused(payload: bytes) -> None:
    assert "UTF-8" in _error(payload)


def test_parse_capture_command_oversized_payload_names_the_limit() -> None:
    payload = b'{"capture_id": "scan-1"}' + b" " * MAX_COMMAND_BYTES
    message = _error(payload)
    assert str(len(payload)) in message
    assert str(MAX_COMMAND_BYTES) in message


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_parse_capture_command_non_finite_at_is_refused(value: str) -> None:
    message = _error(f'{{"at": {value}}}'.encode())
    assert message.startswith("at:")
    assert "finite" in message


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"capture_id": 42}', "capture_id"),
        (b'{"at": "soon"}', "at"),
        (b'{"at": [1]}', "at"),
        (b'{"cameras": "0"}', "cameras"),
        (b'{"cameras": 0}', "cameras"),
        (b'{"cameras": [1.5]}', "cameras.0"),
        (b'{"cameras": [-1]}', "cameras.0"),
        (b'{"cameras": [16]}', "cameras.0"),
        (b'{"format": 1}', "format"),
    ],
)
def test_parse_capture_command_wrong_type_names_the_field(payload: bytes, field: str) -> None:
    assert _error(payload).startswith(f"{field}:")


@pytest.mark.parametrize("payload", [b'{"at": true}', b'{"cameras": [true]}'])
def test_parse_capture_command_boolean_for_number_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_capture_command(payload)


def test_parse_capture_command_empty_camera_list_is_refused() -> None:
    message = _error(b'{"cameras": []}')
    assert message.startswith("cameras:")
    assert "at least 1" in message


def test_parse_capture_command_unknown_format_lists_the_choices() -> None:
    message = _error(b'{"format": "gif"}')
    assert message.startswith("format:")
    assert all(name in message for name in ("jpeg", "png", "raw"))


@pytest.mark.parametrize("payload", [b"[1]", b"[]", b'["scan-1"]'])
def test_parse_capture_command_json_array_is_refused(payload: bytes) -> None:
    assert "must be an object" in _error(payload)


def test_parse_capture_command_reports_every_bad_field() -> None:
    message = _error(b'{"at": "x", "format": "gif", "extra": 1}')
    assert all(part in message for part in ("at:", "format:", "extra: unknown field"))


# -- automatic ids ------------------------------------------------------------------------------


def test_auto_capture_id_is_utc_receipt_time_to_the_ms() -> None:
    assert auto_capture_id(T0) == "auto-20251121T080000250Z"


def test_auto_capture_id_format_and_validity() -> None:
    received_at = 1_767_225_599.987654  # 2025-12-31T23:59:59.987654Z
    capture_id = auto_capture_id(received_at)
    assert re.fullmatch(r"auto-\d{8}T\d{6}\d{3}Z", capture_id)
    assert capture_id == "auto-20251231T235959987Z"
    assert is_capture_id(capture_id)
    parsed = datetime.strptime(capture_id[5:-1] + "000", "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    assert abs(parsed.timestamp() - received_at) < 0.001


def test_auto_capture_id_distinguishes_milliseconds_and_truncates_below() -> None:
    assert auto_capture_id(T0) != auto_capture_id(T0 + 0.001)
    assert auto_capture_id(T0 + 0.0004) == auto_capture_id(T0)
    assert auto_capture_id(1_763_712_000.9999) == "auto-20251121T080000999Z"


def test_auto_capture_id_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        assert auto_capture_id(T0) == "auto-20251121T080000250Z"
    finally:
        monkeypatch.undo()
        time.tzset()


# -- results and status -------------------------------------------------------------------------


def _result(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_id": "node-a",
        "capture_id": "scan-042",
        "status": "ok",
        "received_at": T0,
        "fired_at": T0 + 0.01,
        "at": T0,
        "frames": [
            {
                "camera": 0,
                "timestamp": T0 + 0.012,
                "width": 64,
                "height": 48,
                "format": "jpeg",
                "bytes": 1234,
                "sha256": SHA,
            }
        ],
        "source": "thrift",
    }
    data.update(overrides)
    return data


def _status(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_id": "node-a",
        "sent_at": T0,
        "heartbeat_s": 10.0,
        "version": "1.2.3",
        "thrift": {"host": "10.0.0.5", "port": 6000},
        "cameras": [
            {
                "index": 0,
                "model": "synthetic",
                "resolution": [64, 48],
                "max_resolution": [4056, 3040],
            }
        ],
        "stream_urls": ["http://10.0.0.5:8080/stream/0.mjpeg"],
        "store": {"captures": 3, "bytes": 4096, "free_bytes": 1_000_000},
        "clock": {"synced": True, "offset_estimate_s": -0.0004},
    }
    data.update(overrides)
    return data


def test_capture_result_round_trips_through_json() -> None:
    result = CaptureResult.model_validate(_result())
    again = CaptureResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.status is CaptureStatus.OK
    assert again.frames[0] == Frame.model_validate(_result()["frames"][0])


def test_capture_result_failure_round_trips_with_null_id() -> None:
    result = CaptureResult(
        node_id="node-a",
        capture_id=None,
        status=CaptureStatus.ERROR,
        received_at=T0,
        error="capture command is not valid JSON",
    )
    again = CaptureResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.frames == []
    assert again.source == "mqtt"


@pytest.mark.parametrize(
    "overrides",
    [
        {"extra": 1},
        {"status": "maybe"},
        {"node_id": "Node A"},
        {"capture_id": "../x"},
        {"frames": [{**_result()["frames"][0], "iso": 100}]},
        {"frames": [{**_result()["frames"][0], "sha256": "xyz"}]},
        {"source": "http"},
    ],
)
def test_capture_result_rejects_unknown_fields_and_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, PayloadError)):
        CaptureResult.model_validate(_result(**overrides))


def test_capture_result_unknown_field_rejected_from_json() -> None:
    text = CaptureResult.model_validate(_result()).model_dump_json()
    with pytest.raises(ValidationError, match="extra"):
        CaptureResult.model_validate_json(text[:-1] + ', "extra": 1}')


def test_node_status_round_trips_through_json() -> None:
    status = NodeStatus.model_validate(_status())
    again = NodeStatus.model_validate_json(status.model_dump_json())
    assert again == status
    assert again.cameras[0].resolution == (64, 48)
    assert again.thrift.port == 6000


@pytest.mark.parametrize(
    "overrides",
    [
        {"extra": 1},
        {"store": {"captures": 3, "bytes": 4096, "free_bytes": 1, "oldest": 0}},
        {"thrift": {"host": "h", "port": 6000, "tls": True}},
        {"clock": {"synced": None, "offset_estimate_s": None, "source": "ntp"}},
        {"heartbeat_s": 0},
        {"thrift": {"host": "h", "port": 70000}},
    ],
)
def test_node_status_rejects_unknown_fields_and_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NodeStatus.model_validate(_status(**overrides))


# -- sane ranges (issue 9) --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e300", "1e10", "1763712000250"])  # the last: milliseconds
def test_parse_capture_command_at_after_2100_is_too_far_ahead(value: str) -> None:
    message = _error(f'{{"capture_id": "far", "at": {value}}}'.encode())
    assert message.startswith("at:") and "at too far ahead" in message
    assert "milliseconds" in message


def test_parse_capture_command_negative_at_is_refused() -> None:
    assert _error(b'{"at": -1}').startswith("at:")


def test_schedule_too_far_ahead_uses_the_horizon() -> None:
    assert schedule_too_far_ahead(None, T0, 10) is None
    assert schedule_too_far_ahead(T0 + 10, T0, 10) is None
    reason = schedule_too_far_ahead(T0 + 86401, T0, DEFAULT_SCHEDULE_HORIZON_S)
    assert reason is not None and reason.startswith("at too far ahead")
    assert "86401 s from now" in reason and "86400 s ahead" in reason


@pytest.mark.parametrize(
    ("payload", "token"),
    [
        (b"scan-1", True),
        (b" PRESS\n", True),
        (b"", False),
        (b"  ", False),
        (b"{}", False),
        (b'"scan-1"', False),
        (b"[1]", False),
    ],
)
def test_is_plain_token(payload: bytes, token: bool) -> None:
    assert is_plain_token(payload) is token


def test_capture_result_without_expiry_field_still_validates() -> None:
    data = _result()
    assert "expiry_remaining_s" not in data
    assert CaptureResult.model_validate(data).expiry_remaining_s is None
    with_expiry = CaptureResult.model_validate(_result(expiry_remaining_s=1.0))
    assert CaptureResult.model_validate_json(with_expiry.model_dump_json()) == with_expiry


def test_node_status_without_health_still_validates_as_ok() -> None:
    assert NodeStatus.model_validate(_status()).health == "ok"
    degraded = NodeStatus.model_validate(_status(health="degraded: encoder no progress for 31 s"))
    assert NodeStatus.model_validate_json(degraded.model_dump_json()) == degraded


@pytest.mark.parametrize(
    "payload",
    [
        b'{"fps": 1e-300}',
        b'{"fps": 0.001}',
        b'{"fps": 0}',
        b'{"fps": 241}',
        b'{"fps": NaN}',
        b'{"fps": "30"}',
        b'{"fps": true}',
        b'{"resolution": [1, 1]}',
        b'{"resolution": [640]}',
        b'{"resolution": [640, 480, 3]}',
        b'{"resolution": [99999, 480]}',
        b'{"jpeg_quality": 0}',
        b'{"jpeg_quality": 101}',
        b'{"jpeg_quality": 1e400}',
        b'{"resolution": [320, 240], "fps": 0.001}',
    ],
)
def test_node_settings_out_of_range_are_refused(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        NodeSettings.model_validate_json(payload)


def test_node_settings_in_range() -> None:
    settings = NodeSettings.model_validate_json(
        b'{"resolution": [320, 240], "fps": 1, "jpeg_quality": 100}'
    )
    assert (settings.resolution, settings.fps, settings.jpeg_quality) == ((320, 240), 1.0, 100)
    assert NodeSettings.model_validate_json(b'{"fps": 240}').fps == MAX_FPS


@pytest.mark.parametrize("t1", [b"NaN", b"Infinity", b"-Infinity"])
def test_clock_ping_non_finite_time_is_refused(t1: bytes) -> None:
    with pytest.raises(ValidationError):
        ClockPing.model_validate_json(b'{"seq": 1, "t1": ' + t1 + b"}")
