"""Camera settings to libcamera controls and back; frame durations; sync roles and state."""

from __future__ import annotations

import socket
import threading

import pytest
from pydantic import ValidationError

from pepi_fleet.node.camera.pi_controls import (
    controls_from_metadata,
    frame_duration_us,
    settings_controls,
)
from pepi_fleet.node.camera.pi_sync import (
    SyncTracker,
    camera_modes,
    resolve_role,
    sync_server_heard,
)
from pepi_fleet.schemas.camera import (
    CameraControls,
    CameraSettings,
    locked_settings,
    merge_settings,
)
from pepi_fleet.schemas.errors import CameraError, PayloadError

NEW_LIBCAMERA = {"ExposureTime", "ExposureTimeMode", "AnalogueGain", "AwbEnable", "AwbMode"}
NEW_LIBCAMERA |= {"ColourGains"}
OLD_LIBCAMERA = {"ExposureTime", "AnalogueGain", "AeEnable", "AwbEnable", "AwbMode", "ColourGains"}
WITH_FOCUS = NEW_LIBCAMERA | {"AfMode", "LensPosition"}


def test_settings_controls_fixed_exposure_and_white_balance() -> None:
    settings = CameraSettings(exposure_time_us=8000, analogue_gain=2.5, colour_gains=(1.9, 1.4))
    assert settings_controls(settings, NEW_LIBCAMERA) == {
        "ExposureTime": 8000,
        "AnalogueGain": 2.5,
        "ColourGains": (1.9, 1.4),
        "AwbEnable": False,
    }


def test_settings_controls_old_libcamera_turns_ae_off_only_when_both_are_fixed() -> None:
    both = CameraSettings(exposure_time_us=8000, analogue_gain=2.5)
    assert settings_controls(both, OLD_LIBCAMERA)["AeEnable"] is False
    gain_auto = CameraSettings(exposure_time_us=8000, analogue_gain=0)
    assert settings_controls(gain_auto, OLD_LIBCAMERA)["AeEnable"] is True


def test_settings_controls_awb_mode_turns_automatic_white_balance_on() -> None:
    controls = settings_controls(CameraSettings(awb_mode="daylight"), NEW_LIBCAMERA)
    assert controls == {"AwbMode": 5, "AwbEnable": True}


def test_settings_controls_focus_needs_a_focus_motor() -> None:
    settings = CameraSettings(af_mode="manual", lens_position=2.0)
    assert settings_controls(settings, WITH_FOCUS) == {"AfMode": 0, "LensPosition": 2.0}
    with pytest.raises(CameraError, match="no focus motor"):
        settings_controls(settings, NEW_LIBCAMERA)


def test_camera_settings_reject_contradictions() -> None:
    with pytest.raises(ValidationError, match="not both"):
        CameraSettings(awb_mode="auto", colour_gains=(1.0, 1.0))
    with pytest.raises(ValidationError, match="manual"):
        CameraSettings(af_mode="continuous", lens_position=1.0)
    with pytest.raises(ValidationError):
        CameraSettings.model_validate({"exposure": 1000})


def test_merge_settings_keeps_white_balance_and_focus_consistent() -> None:
    fixed = merge_settings(CameraSettings(awb_mode="auto"), CameraSettings(colour_gains=(2, 1)))
    assert fixed.awb_mode is None and fixed.colour_gains == (2, 1)
    back = merge_settings(fixed, CameraSettings(awb_mode="cloudy"))
    assert back.awb_mode == "cloudy" and back.colour_gains is None
    focused = merge_settings(CameraSettings(af_mode="continuous"), CameraSettings(lens_position=3))
    assert focused.af_mode == "manual" and focused.lens_position == 3
    exposure = merge_settings(focused, CameraSettings(exposure_time_us=500))
    assert exposure.lens_position == 3 and exposure.exposure_time_us == 500


def test_controls_from_metadata_reads_back_what_was_applied() -> None:
    applied = CameraSettings(exposure_time_us=8000, colour_gains=(1.9, 1.4), af_mode="manual")
    metadata = {
        "ExposureTime": 7998,
        "AnalogueGain": 2.0,
        "ColourGains": (1.9, 1.4),
        "ColourTemperature": 4800,
        "LensPosition": 2.0,
        "FrameDuration": 33_333,
    }
    assert controls_from_metadata(metadata, applied) == CameraControls(
        exposure_time_us=7998,
        analogue_gain=2.0,
        colour_gains=(1.9, 1.4),
        colour_temperature_k=4800,
        lens_position=2.0,
        frame_duration_us=33_333,
        auto_exposure=False,
        auto_white_balance=False,
        af_mode="manual",
    )
    newer = controls_from_metadata({"ExposureTimeMode": 0}, applied)
    assert newer.auto_exposure is True  # the camera's own report wins


def test_locked_settings_fix_the_reference_cameras_values() -> None:
    reading = CameraControls(exposure_time_us=12_000, analogue_gain=3.0, colour_gains=(2.1, 1.7))
    assert locked_settings(reading) == CameraSettings(
        exposure_time_us=12_000, analogue_gain=3.0, colour_gains=(2.1, 1.7)
    )
    with pytest.raises(PayloadError, match="reference camera"):
        locked_settings(CameraControls(exposure_time_us=12_000))


@pytest.mark.parametrize(
    ("fps", "limits", "lock", "expected"),
    [
        (30.0, (8_331, 694_434_742), False, 33_333),  # a 120 fps mode does 30 fps
        (30.0, (100_000, 694_434_742), False, 100_000),  # a 10 fps mode: 10 fps, not 30
        (30.0, (24_994, 694_434_742), True, 33_333),  # 40 fps mode, room to lock at 30
        (38.0, (24_994, 694_434_742), True, 29_405),  # 40 fps mode: at most 34 fps locked
        (30.0, None, False, 33_333),
    ],
)
def test_frame_duration_us_fits_the_sensor_mode(
    fps: float, limits: tuple[int, int] | None, lock: bool, expected: int
) -> None:
    assert frame_duration_us(fps, limits, frame_lock=lock) == expected


def test_camera_modes_a_server_node_serves_from_its_first_camera_only() -> None:
    assert camera_modes("server", 2) == ["server", "client"]
    assert camera_modes("client", 2) == ["client", "client"]


def test_resolve_role_auto_follows_a_server_it_hears() -> None:
    assert resolve_role("auto", lambda _s: True) == "client"
    assert resolve_role("auto", lambda _s: False) == "server"
    assert resolve_role("server", lambda _s: True) == "server"


def test_sync_server_heard_on_a_real_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not sync_server_heard(0.2, group="127.0.0.1", port=port)
    result: list[bool] = []
    listener = threading.Thread(
        target=lambda: result.append(sync_server_heard(5.0, group="127.0.0.1", port=port))
    )
    listener.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        while listener.is_alive() and not result:
            server.sendto(b"sync", ("127.0.0.1", port))
            listener.join(0.05)
    listener.join()
    assert result == [True]


def test_sync_tracker_reports_readiness_and_the_lag_when_it_became_ready() -> None:
    tracker = SyncTracker("client")
    assert tracker.update({"SyncReady": False}) is False  # no server heard: no timer yet
    assert tracker.status().timer_us is None
    tracker.update({"SyncReady": False, "SyncTimer": 66_000})
    assert tracker.update({"SyncReady": True, "SyncTimer": -12}) is True
    tracker.update({"SyncReady": True, "SyncTimer": -33_345})
    status = tracker.status()
    assert (status.mode, status.ready, status.timer_us, status.lag_us) == (
        "client",
        True,
        -33_345,
        -12,
    )
    assert SyncTracker("off").update({"SyncReady": True}) is None
