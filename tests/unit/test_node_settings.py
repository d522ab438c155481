"""Settings on a node: the synthetic camera's auto exposure, applying NodeSettings all or
nothing, metering for a lock, and the EXIF a frame's controls give its JPEG."""

from __future__ import annotations

import io
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base

from pepi_fleet.node.camera.base import CapturedFrame
from pepi_fleet.node.camera.folder import FolderCamera
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.camera.synthetic_exposure import (
    colour_gains_for,
    scene_brightness,
    temperature_for,
)
from pepi_fleet.node.encode import encode_frame
from pepi_fleet.node.settings import NodeSettingsApplier
from pepi_fleet.schemas.camera import CameraControls, CameraSettings, locked_settings
from pepi_fleet.schemas.errors import CameraError, PayloadError
from pepi_fleet.schemas.exposure import MeterRequest
from pepi_fleet.schemas.status import NodeSettings


def synthetic(node_id: str, count: int = 1) -> SyntheticCamera:
    return SyntheticCamera(node_id, resolution=(64, 48), count=count)


def applier(camera: object, quality: list[int] | None = None) -> NodeSettingsApplier:
    seen = quality if quality is not None else []
    return NodeSettingsApplier("n1", camera, seen.append, threading.Event())  # type: ignore[arg-type]


def test_synthetic_auto_exposure_is_per_node_and_stable() -> None:
    a, again, b = synthetic("cam-a"), synthetic("cam-a"), synthetic("cam-b")
    (ca,), (cb,) = a.read_settings(), b.read_settings()
    assert ca == again.read_settings()[0]  # deterministic across instances (and processes)
    assert (ca.exposure_time_us, ca.colour_gains) != (cb.exposure_time_us, cb.colour_gains)
    assert ca.auto_exposure and ca.auto_white_balance
    assert ca.frame_duration_us == 33_333
    assert ca.exposure_time_us is not None and ca.analogue_gain is not None
    assert ca.exposure_time_us <= 0.8 * 33_333
    # exposure x gain meets what the scene needs, whichever way it is split
    need = 24_000 / scene_brightness("cam-a", 0)
    assert ca.exposure_time_us * ca.analogue_gain == pytest.approx(need, rel=0.01)


def test_synthetic_fixed_values_are_applied_and_reported_on_frames() -> None:
    camera = synthetic("cam-a", count=2)
    camera.apply_settings(
        CameraSettings(exposure_time_us=5000, analogue_gain=3.0, colour_gains=(2.2, 1.4))
    )
    for controls in camera.read_settings():
        assert (controls.exposure_time_us, controls.analogue_gain) == (5000, 3.0)
        assert controls.colour_gains == (2.2, 1.4)
        assert not controls.auto_exposure and not controls.auto_white_balance
    frames = camera.capture([0, 1], "c1", None)
    assert [f.controls for f in frames] == camera.read_settings()
    assert [i.controls for i in camera.infos()] == camera.read_settings()
    camera.apply_settings(CameraSettings(exposure_time_us=0, awb_mode="daylight"))
    (back, _) = camera.read_settings()
    assert back.auto_exposure and back.analogue_gain == 3.0
    assert back.colour_gains == colour_gains_for(5500) and back.colour_temperature_k == 5500


def test_synthetic_lock_copies_one_camera_to_another() -> None:
    reference, other = synthetic("cam-a"), synthetic("cam-b")
    other.apply_settings(locked_settings(reference.read_settings()[0]))
    (want,), (got,) = reference.read_settings(), other.read_settings()
    assert (got.exposure_time_us, got.analogue_gain, got.colour_gains) == (
        want.exposure_time_us,
        want.analogue_gain,
        want.colour_gains,
    )
    assert temperature_for(colour_gains_for(4200)) == 4200


def test_synthetic_has_no_focus_motor() -> None:
    camera = synthetic("cam-a")
    with pytest.raises(CameraError, match="no focus motor"):
        camera.apply_settings(CameraSettings(lens_position=1.0))


def test_applier_applies_sensor_settings_and_quality() -> None:
    camera, quality = synthetic("cam-a"), []
    applier(camera, quality).apply(NodeSettings(exposure_time_us=7000, jpeg_quality=60))
    assert camera.read_settings()[0].exposure_time_us == 7000
    assert quality == [60]


def test_applier_refuses_the_whole_payload_when_a_part_cannot_apply() -> None:
    camera, quality = synthetic("cam-a"), []
    before = camera.read_settings()
    with pytest.raises(PayloadError, match="exceeds camera 0"):
        applier(camera, quality).apply(
            NodeSettings(exposure_time_us=7000, resolution=(9000, 9000), jpeg_quality=60)
        )
    with pytest.raises(CameraError, match="no focus motor"):
        applier(camera, quality).apply(NodeSettings(lens_position=2.0, jpeg_quality=60))
    assert camera.read_settings() == before and quality == []
    assert camera.infos()[0].resolution == (64, 48)


def test_applier_on_a_camera_without_exposure_controls_says_so(tmp_path: Path) -> None:
    Image.new("RGB", (32, 24)).save(tmp_path / "a.jpg")
    folder = FolderCamera(tmp_path, 10.0)
    with pytest.raises(PayloadError, match="cannot set exposure, gain"):
        applier(folder).apply(NodeSettings(analogue_gain=2.0))
    reading = applier(folder).meter(MeterRequest(request_id="r1", settle_s=0))
    assert reading.controls is None and reading.error is not None
    assert "choose a node with a Pi camera" in reading.error
    applier(folder).apply(NodeSettings(jpeg_quality=50))  # what it can do still works


def test_applier_meter_puts_the_camera_on_auto_and_reads_it() -> None:
    camera = synthetic("cam-a", count=2)
    auto = camera.read_settings()[1]
    camera.apply_settings(CameraSettings(exposure_time_us=100, colour_gains=(1.0, 1.0)))
    reading = applier(camera).meter(MeterRequest(request_id="r1", camera=1, settle_s=0))
    assert reading.error is None and reading.controls == auto
    assert (reading.request_id, reading.node_id, reading.camera) == ("r1", "n1", 1)
    missing = applier(camera).meter(MeterRequest(request_id="r2", camera=2, settle_s=0))
    assert missing.error is not None and "camera 2 does not exist" in missing.error


def test_encode_exif_carries_exposure_gain_and_white_balance() -> None:
    controls = CameraControls(
        exposure_time_us=12_500,
        analogue_gain=2.4,
        colour_gains=(1.9, 1.6),
        auto_exposure=False,
        auto_white_balance=True,
    )
    frame = CapturedFrame(
        camera=0,
        timestamp=1_763_712_000.25,
        pixels=np.zeros((24, 32, 3), np.uint8),
        model="imx477",
        in_sync=True,
        controls=controls,
    )
    data = encode_frame(frame, "jpeg", node_id="n1", capture_id="c1").data
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif().get_ifd(IFD.Exif)
    assert Fraction(exif[Base.ExposureTime]) == Fraction(1, 80)
    assert exif[Base.ISOSpeedRatings] == 240
    assert exif[Base.ExposureMode] == 1  # manual
    assert exif[Base.WhiteBalance] == 0  # auto
    comment = exif[Base.UserComment]
    assert comment.startswith(b"ASCII\0\0\0pepi-fleet in_sync=yes controls=")
    parsed = CameraControls.model_validate_json(comment.split(b"controls=", 1)[1])
    assert parsed == controls


def test_encode_without_controls_writes_no_exposure_tags() -> None:
    frame = CapturedFrame(
        camera=0, timestamp=1.0, pixels=np.zeros((8, 8, 3), np.uint8), model="synthetic"
    )
    data = encode_frame(frame, "jpeg", node_id="n1", capture_id="c1").data
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif().get_ifd(IFD.Exif)
    assert Base.ExposureTime not in exif and Base.UserComment not in exif
