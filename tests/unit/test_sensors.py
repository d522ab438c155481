"""The Raspberry Pi camera table: names libcamera reports, figures against the published ones."""

from __future__ import annotations

import math

import pytest

from pepi_fleet.node.camera.sensors import SENSORS, frame_optics, scaler_crop, sensor_for


@pytest.mark.parametrize(
    ("model", "product"),
    [
        ("ov5647", "Camera Module v1"),
        ("imx219", "Camera Module v2"),
        ("imx219_noir", "Camera Module v2"),
        ("imx708", "Camera Module 3"),
        ("imx708_noir", "Camera Module 3"),
        ("imx708_wide", "Camera Module 3 Wide"),
        ("IMX708_WIDE_NOIR", "Camera Module 3 Wide"),
        ("imx477", "High Quality Camera"),
        ("imx500", "AI Camera"),
        ("imx296", "Global Shutter Camera"),
        ("synthetic", "High Quality Camera"),
    ],
)
def test_sensors_libcamera_model_names_find_their_module(model: str, product: str) -> None:
    sensor = sensor_for(model)
    assert sensor is not None
    assert sensor.product == product


@pytest.mark.parametrize("model", ["folder", "picamera2", "", "imx999"])
def test_sensors_unknown_model_has_no_entry(model: str) -> None:
    assert sensor_for(model) is None


@pytest.mark.parametrize(
    ("model", "h_fov_deg"),
    [("ov5647", 53.5), ("imx219", 62.2), ("imx708", 66.0), ("imx500", 66.0)],
)
def test_sensors_figures_reproduce_the_published_field_of_view(
    model: str, h_fov_deg: float
) -> None:
    sensor = SENSORS[model]
    assert sensor.lens is not None
    fov = math.degrees(2 * math.atan(sensor.width_mm / 2 / sensor.lens.focal_length_mm))
    assert fov == pytest.approx(h_fov_deg, abs=3)


def test_sensors_frame_of_another_aspect_shows_the_largest_centred_area() -> None:
    hq = SENSORS["imx477"]
    wide = frame_optics(hq, 1920, 1080)  # 16:9 on a 4:3 sensor: full width
    assert wide.area_mm[0] == pytest.approx(hq.width_mm)
    assert wide.area_mm[1] == pytest.approx(hq.width_mm * 9 / 16)
    tall = frame_optics(hq, 1000, 1000)  # square: full height
    assert tall.area_mm == pytest.approx((hq.height_mm, hq.height_mm))
    assert wide.pixels_per_mm[0] == pytest.approx(wide.pixels_per_mm[1])


def test_sensors_scaler_crop_from_libcamera_metadata() -> None:
    # Camera Module v2's 1080p mode: a central window, not the whole sensor
    assert scaler_crop({"ScalerCrop": (680, 692, 1920, 1080)}) == (680, 692, 1920, 1080)
    assert scaler_crop({"ScalerCrop": [0.0, 0.0, 4056.0, 3040.0]}) == (0, 0, 4056, 3040)
    assert scaler_crop({}) is None
    assert scaler_crop({"ScalerCrop": (0, 0, 0, 0)}) is None
    assert scaler_crop({"ScalerCrop": (1, 2)}) is None
    assert scaler_crop({"ScalerCrop": "garbage"}) is None
