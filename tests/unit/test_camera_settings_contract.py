"""Camera settings contracts: NodeSettings' sensor fields, the fleet merge, frames' new fields,
the meter exchange, topics and choosing a lock's reference."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pepi_fleet.controller.camera_settings import (
    LockError,
    Reference,
    choose_reference,
    parse_reference,
)
from pepi_fleet.schemas.camera import CameraSettings, merge_settings
from pepi_fleet.schemas.capture import CaptureResult, Frame
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.exposure import MAX_SETTLE_S, MeterReading, MeterRequest
from pepi_fleet.schemas.status import NodeSettings
from pepi_fleet.schemas.topics import TopicKind, Topics

SHA = "0" * 64


def test_node_settings_carries_every_sensor_setting() -> None:
    settings = NodeSettings.model_validate_json(
        b'{"exposure_time_us": 10000, "analogue_gain": 2, "colour_gains": [1.9, 1.5],'
        b' "af_mode": "manual", "lens_position": 1.5, "resolution": [2028, 1520],'
        b' "jpeg_quality": 85, "fps": 10}'
    )
    assert settings.has_camera_settings()
    assert settings.camera_settings() == CameraSettings(
        exposure_time_us=10000,
        analogue_gain=2.0,
        colour_gains=(1.9, 1.5),
        af_mode="manual",
        lens_position=1.5,
    )
    assert not NodeSettings(jpeg_quality=50).has_camera_settings()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"exposure_time_us": true}', "exposure_time_us"),
        (b'{"exposure_time_us": "100"}', "exposure_time_us"),
        (b'{"exposure_time_us": 60000001}', "less than or equal to 60000000"),
        (b'{"analogue_gain": 65}', "analogue_gain"),
        (b'{"colour_gains": [0, 1]}', "colour_gains.0"),
        (b'{"colour_gains": [1, 2, 3]}', "colour_gains"),
        (b'{"awb_mode": "sunny"}', "awb_mode"),
        (b'{"awb_mode": "auto", "colour_gains": [2, 1]}', "not both"),
        (b'{"lens_position": 2, "af_mode": "auto"}', "needs af_mode 'manual'"),
        (b'{"shutter_us": 10}', "Extra inputs"),
    ],
)
def test_node_settings_refuses_bad_sensor_values(payload: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NodeSettings.model_validate_json(payload)


def test_merge_settings_of_fleet_settings_keeps_the_rest_and_the_type() -> None:
    fleet = NodeSettings(exposure_time_us=9000, colour_gains=(2.0, 1.5), jpeg_quality=80)
    merged = merge_settings(fleet, NodeSettings(awb_mode="cloudy"))
    assert isinstance(merged, NodeSettings)
    assert merged == NodeSettings(exposure_time_us=9000, awb_mode="cloudy", jpeg_quality=80)
    focused = merge_settings(merged, NodeSettings(lens_position=3.0))
    assert (focused.af_mode, focused.lens_position) == ("manual", 3.0)
    assert merge_settings(focused, NodeSettings(af_mode="continuous")).lens_position is None


def test_frame_without_the_new_fields_still_parses() -> None:
    old = {
        "camera": 0,
        "timestamp": 1.5,
        "width": 4,
        "height": 3,
        "format": "jpeg",
        "bytes": 10,
        "sha256": SHA,
    }
    frame = Frame.model_validate_json(json.dumps(old))
    assert frame.in_sync is None and frame.controls is None
    result = CaptureResult.model_validate_json(
        json.dumps(
            {"node_id": "n1", "capture_id": "c", "status": "ok", "received_at": 1, "frames": [old]}
        )
    )
    assert result.frames == [frame]


def test_frame_carries_sync_and_controls() -> None:
    payload = {
        "camera": 0, "timestamp": 1.5, "width": 4, "height": 3, "format": "jpeg", "bytes": 10,
        "sha256": SHA, "in_sync": True,
        "controls": {"exposure_time_us": 8000, "analogue_gain": 2.0, "colour_gains": [2, 1.5]},
    }  # fmt: skip
    frame = Frame.model_validate_json(json.dumps(payload))
    assert frame.in_sync is True
    assert frame.controls is not None and frame.controls.colour_gains == (2.0, 1.5)
    assert Frame.model_validate_json(frame.model_dump_json()) == frame
    with pytest.raises(ValidationError, match="Extra inputs"):
        Frame.model_validate_json(json.dumps(payload | {"sync": True}))


def test_meter_request_bounds() -> None:
    assert MeterRequest.model_validate_json(b'{"request_id": "r1"}').camera == 0
    for bad in (
        b'{"request_id": "r1", "settle_s": 31}',
        b'{"request_id": "r1", "camera": 16}',
        b'{"request_id": "a/b"}',
        b'{"request_id": "r1", "settle_s": "1"}',
    ):
        with pytest.raises(ValidationError):
            MeterRequest.model_validate_json(bad)
    assert MAX_SETTLE_S == 30.0
    reading = MeterReading(request_id="r1", node_id="n1", camera=0, error="no camera")
    assert MeterReading.model_validate_json(reading.model_dump_json()) == reading


def test_topics_fleet_settings_and_meter() -> None:
    topics = Topics("pepi/v1")
    assert topics.fleet_settings() == "pepi/v1/settings"
    assert topics.meter("cam1") == "pepi/v1/nodes/cam1/meter"
    assert topics.meter_reading("cam1") == "pepi/v1/nodes/cam1/meter/reading"
    assert topics.parse("pepi/v1/settings").kind is TopicKind.FLEET_SETTINGS  # type: ignore[union-attr]
    parsed = topics.parse("pepi/v1/nodes/cam1/meter/reading")
    assert parsed is not None and (parsed.kind, parsed.node_id) == (TopicKind.METER_READING, "cam1")
    assert topics.parse("pepi/v1/nodes/cam1/meter").kind is TopicKind.METER  # type: ignore[union-attr]


def test_parse_reference_node_and_camera() -> None:
    assert parse_reference("cam01") == Reference("cam01", 0)
    assert parse_reference("cam01:2") == Reference("cam01", 2)
    assert str(Reference("cam01", 2)) == "cam01:2"
    for bad in ("cam01:x", "CAM", "cam01:", ":1", "cam01:-1"):
        with pytest.raises(PayloadError):
            parse_reference(bad)


def test_choose_reference_defaults_to_the_first_online_node() -> None:
    assert choose_reference(None, ["cam03", "cam01", "cam02"]) == Reference("cam01", 0)
    assert choose_reference("cam02:1", ["cam01", "cam02"]) == Reference("cam02", 1)
    with pytest.raises(LockError, match="no node is online"):
        choose_reference(None, [])
    with pytest.raises(LockError, match="cam09 is not online; online: cam01"):
        choose_reference("cam09", ["cam01"])
