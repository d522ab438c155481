"""Camera settings to libcamera controls, and the applied values read back from metadata."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from pepi_fleet.schemas.camera import AfMode, AwbMode, CameraControls, CameraSettings
from pepi_fleet.schemas.errors import CameraError

AWB_MODES: dict[AwbMode, int] = {
    "auto": 0,
    "incandescent": 1,
    "tungsten": 2,
    "fluorescent": 3,
    "indoor": 4,
    "daylight": 5,
    "cloudy": 6,
    "custom": 7,
}
"""libcamera's AwbModeEnum values (control_ids_core.yaml)."""
AF_MODES: dict[AfMode, int] = {"manual": 0, "auto": 1, "continuous": 2}
"""libcamera's AfModeEnum values."""
_AF_NAMES = {value: name for name, value in AF_MODES.items()}

SYNC_MAX_FPS_FRACTION = 0.85
"""A frame-locked sensor runs at most this fraction of its mode's top rate: sync clients
catch up by shortening frames, which a sensor already at its shortest frame cannot
(Raspberry Pi's multi-camera docs; picamera2#1250 saw 34 fps fail to lock on a 40 fps mode
while 33 fps locked)."""


def settings_controls(settings: CameraSettings, advertised: Collection[str]) -> dict[str, Any]:
    """The libcamera controls that put a camera in ``settings`` (its resolution aside).

    ``advertised`` is the camera's ``camera_controls``; a setting needing a control the
    camera lacks raises CameraError. picamera2 turns ``ExposureTime``/``AnalogueGain`` 0
    into automatic mode itself (``ExposureTimeMode``/``AnalogueGainMode`` on libcamera
    0.5+); on older libcamera, ``AeEnable`` is off only while both are fixed.
    """

    def need(name: str, what: str) -> None:
        if name not in advertised:
            raise CameraError(f"this camera cannot set {what}: libcamera offers no {name}")

    controls: dict[str, Any] = {}
    if settings.exposure_time_us is not None:
        need("ExposureTime", "the exposure time")
        controls["ExposureTime"] = settings.exposure_time_us
    if settings.analogue_gain is not None:
        need("AnalogueGain", "the analogue gain")
        controls["AnalogueGain"] = settings.analogue_gain
    if "AeEnable" in advertised and "ExposureTimeMode" not in advertised and controls:
        controls["AeEnable"] = not (settings.exposure_time_us and settings.analogue_gain)
    if settings.awb_mode is not None:
        need("AwbMode", "the white balance mode")
        controls["AwbMode"] = AWB_MODES[settings.awb_mode]
        if "AwbEnable" in advertised:
            controls["AwbEnable"] = True
    if settings.colour_gains is not None:
        need("ColourGains", "fixed colour gains")
        controls["ColourGains"] = tuple(settings.colour_gains)
        if "AwbEnable" in advertised:
            controls["AwbEnable"] = False
    if settings.af_mode is not None:
        need("AfMode", "the focus mode (it has no focus motor)")
        controls["AfMode"] = AF_MODES[settings.af_mode]
    if settings.lens_position is not None:
        need("LensPosition", "the lens position (it has no focus motor)")
        controls["LensPosition"] = settings.lens_position
    return controls


def controls_from_metadata(metadata: Mapping[str, Any], applied: CameraSettings) -> CameraControls:
    """What the camera applied to a frame: values from its metadata, modes as requested."""
    gains = metadata.get("ColourGains")
    colour_gains = (
        (float(gains[0]), float(gains[1]))
        if isinstance(gains, (tuple, list)) and len(gains) == 2
        else None
    )
    exposure_mode = metadata.get("ExposureTimeMode")
    auto_exposure = (
        exposure_mode == 0 if isinstance(exposure_mode, int) else not applied.exposure_time_us
    )
    af_mode = metadata.get("AfMode")
    return CameraControls(
        exposure_time_us=_int(metadata.get("ExposureTime")),
        analogue_gain=_float(metadata.get("AnalogueGain")),
        colour_gains=colour_gains,
        colour_temperature_k=_int(metadata.get("ColourTemperature")),
        lens_position=_float(metadata.get("LensPosition")),
        frame_duration_us=_int(metadata.get("FrameDuration")),
        auto_exposure=auto_exposure,
        auto_white_balance=applied.colour_gains is None,
        af_mode=_AF_NAMES.get(af_mode) if isinstance(af_mode, int) else applied.af_mode,
    )


def frame_duration_us(fps: float, limits: tuple[int, int] | None, frame_lock: bool) -> int:
    """The fixed frame duration to ask for: ``1 / fps`` within the sensor mode's ``limits``.

    ``limits`` is the mode's (shortest, longest) FrameDurationLimits in µs; a frame-locked
    sensor keeps SYNC_MAX_FPS_FRACTION of headroom on the shortest.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise CameraError(f"frame rate must be a positive number, got {fps!r}")
    wanted = round(1e6 / fps)
    if limits is None:
        return wanted
    shortest, longest = limits
    if frame_lock:
        shortest = math.ceil(shortest / SYNC_MAX_FPS_FRACTION)
    return max(shortest, min(wanted, longest))


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
