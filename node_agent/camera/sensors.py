"""The official Raspberry Pi cameras' sensors and lenses, for the intrinsics priors in EXIF.

Figures are Raspberry Pi's published hardware specification (sensor resolution, pixel size,
focal length, f-number). The imaged area is pixel count x pixel size: that reproduces the
published fields of view, where the "sensor image area" row of older sheets (v1: 3.76 mm)
does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FILM_35MM_DIAGONAL_MM = 43.27
"""Diagonal of a 36 x 24 mm frame: CIPA's reference for 35 mm-equivalent focal lengths."""


@dataclass(frozen=True)
class Lens:
    """A lens fixed to the camera module."""

    focal_length_mm: float
    f_number: float


@dataclass(frozen=True)
class Sensor:
    """One camera module: its sensor's active pixel array and, if fixed, its lens."""

    product: str
    """What EXIF LensModel names it by (the module's product name)."""
    chip: str
    pixels: tuple[int, int]
    """Active pixel array, width x height (libcamera's PixelArraySize)."""
    pixel_size_um: float
    lens: Lens | None
    """None: the module takes interchangeable lenses (HQ, GS), so the focal length is unknown."""

    @property
    def width_mm(self) -> float:
        """Width of the active area."""
        return self.pixels[0] * self.pixel_size_um / 1000

    @property
    def height_mm(self) -> float:
        """Height of the active area."""
        return self.pixels[1] * self.pixel_size_um / 1000


_HQ = Sensor("High Quality Camera", "Sony IMX477", (4056, 3040), 1.55, None)

SENSORS: dict[str, Sensor] = {
    # keys: the sensor model as libcamera names it (picamera2's camera_properties["Model"])
    "ov5647": Sensor("Camera Module v1", "OmniVision OV5647", (2592, 1944), 1.4, Lens(3.60, 2.9)),
    "imx219": Sensor("Camera Module v2", "Sony IMX219", (3280, 2464), 1.12, Lens(3.04, 2.0)),
    "imx708": Sensor("Camera Module 3", "Sony IMX708", (4608, 2592), 1.4, Lens(4.74, 1.8)),
    "imx708_wide": Sensor(
        "Camera Module 3 Wide", "Sony IMX708", (4608, 2592), 1.4, Lens(2.75, 2.2)
    ),
    "imx477": _HQ,
    "imx500": Sensor("AI Camera", "Sony IMX500", (4056, 3040), 1.55, Lens(4.74, 1.79)),
    "imx296": Sensor("Global Shutter Camera", "Sony IMX296", (1456, 1088), 3.45, None),
    # The synthetic camera claims the HQ camera's sensor, as it claims its resolution.
    "synthetic": _HQ,
}

_VARIANT_SUFFIXES = ("_noir", "_mono")
"""Variants libcamera names apart that share sensor and lens (NoIR: no IR filter)."""


def sensor_for(model: str) -> Sensor | None:
    """The module behind a camera model name (``imx708_wide_noir`` -> Camera Module 3 Wide)."""
    name = model.strip().lower()
    for suffix in _VARIANT_SUFFIXES:
        name = name.removesuffix(suffix)
    return SENSORS.get(name)


@dataclass(frozen=True)
class FrameOptics:
    """What a frame of ``width`` x ``height`` pixels shows of its sensor, in EXIF's terms."""

    pixels_per_mm: tuple[float, float]
    """Image pixels per mm of focal plane, x and y (EXIF FocalPlaneX/YResolution)."""
    area_mm: tuple[float, float]
    """The part of the sensor the frame shows, width x height."""
    focal_length_mm: float | None
    focal_length_35mm: int | None
    """35 mm-equivalent focal length of this frame's field of view (CIPA: by the diagonal)."""


def frame_optics(
    sensor: Sensor,
    width: int,
    height: int,
    crop: tuple[int, int, int, int] | None = None,
) -> FrameOptics:
    """The optics of one frame scaled from ``crop`` of the sensor's pixel array.

    ``crop`` is (x, y, width, height) in full-resolution sensor pixels (libcamera's
    ScalerCrop). Without it the frame is taken to show the largest centred area of its own
    aspect ratio, which is what libcamera selects for a full field-of-view sensor mode.
    """
    if crop is not None:
        crop_w, crop_h = float(crop[2]), float(crop[3])
    else:
        full_w, full_h = sensor.pixels
        if width * full_h >= full_w * height:  # frame wider than the sensor: full width
            crop_w, crop_h = full_w, full_w * height / width
        else:
            crop_w, crop_h = full_h * width / height, full_h
    area = (crop_w * sensor.pixel_size_um / 1000, crop_h * sensor.pixel_size_um / 1000)
    focal = sensor.lens.focal_length_mm if sensor.lens else None
    focal_35 = (
        round(focal * FILM_35MM_DIAGONAL_MM / math.hypot(*area)) if focal is not None else None
    )
    return FrameOptics(
        pixels_per_mm=(width / area[0], height / area[1]),
        area_mm=area,
        focal_length_mm=focal,
        focal_length_35mm=focal_35,
    )


def scaler_crop(metadata: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """The sensor area a libcamera frame shows (its ScalerCrop: x, y, width, height).

    None when absent or not four numbers: the EXIF then assumes the largest centred area,
    and a capture never fails over it.
    """
    try:
        x, y, width, height = (int(v) for v in metadata.get("ScalerCrop") or ())
    except (TypeError, ValueError):
        return None
    return (x, y, width, height) if width > 0 and height > 0 else None
