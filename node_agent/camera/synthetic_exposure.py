"""The synthetic camera's exposure and white balance: a plausible, deterministic auto mode.

Each node "sees" a scene of its own brightness and colour temperature (derived from its id,
so every process agrees), so unlocked nodes expose differently, as real ones do, until a
lock applies one reference camera's values to all of them.
"""

from __future__ import annotations

import hashlib

from pepi_fleet.schemas.camera import AwbMode, CameraControls, CameraSettings
from pepi_fleet.schemas.errors import CameraError

EXPOSURE_GAIN_US = 24_000.0
"""Exposure x gain (µs) that a scene of brightness 1 needs for a mid-grey picture."""
MAX_EXPOSURE_FRACTION = 0.8
"""Auto exposure keeps the exposure below this fraction of the frame duration, then gains."""
MAX_AUTO_GAIN = 16.0
AWB_TEMPERATURES_K: dict[AwbMode, int | None] = {
    "auto": None,
    "custom": None,
    "incandescent": 2850,
    "tungsten": 3200,
    "indoor": 3500,
    "fluorescent": 4000,
    "daylight": 5500,
    "cloudy": 6500,
}
"""The colour temperature each libcamera AWB mode settles on here (None: the scene's own)."""


def _fraction(node_id: str, camera: int, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{node_id}:{camera}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def scene_brightness(node_id: str, camera: int) -> float:
    """How bright this camera's scene is, 0.5..1.5 (stable per node and camera)."""
    return 0.5 + _fraction(node_id, camera, "brightness")


def scene_temperature_k(node_id: str, camera: int) -> int:
    """The colour temperature of this camera's light, 3000..6500 K (stable)."""
    return 3000 + round(3500 * _fraction(node_id, camera, "temperature"))


def colour_gains_for(temperature_k: int) -> tuple[float, float]:
    """(red, blue) gains that make grey grey under ``temperature_k`` (warmer: less red)."""
    red = 1.0 + temperature_k / 5000
    blue = 1.0 + 4000 / temperature_k
    return (round(red, 3), round(blue, 3))


def temperature_for(gains: tuple[float, float]) -> int:
    """The colour temperature ``colour_gains_for`` maps to ``gains`` (from the red gain)."""
    return max(1000, round((gains[0] - 1.0) * 5000))


class SyntheticExposure:
    """One synthetic camera's requested settings and what it applies to its frames."""

    def __init__(self, node_id: str, camera: int) -> None:
        self._brightness = scene_brightness(node_id, camera)
        self._temperature_k = scene_temperature_k(node_id, camera)
        self.requested = CameraSettings()

    def controls(self, frame_duration_us: int) -> CameraControls:
        """The values applied at ``frame_duration_us``: fixed where set, else automatic."""
        settings = self.requested
        fixed_exposure = settings.exposure_time_us or None
        fixed_gain = settings.analogue_gain or None
        needed = EXPOSURE_GAIN_US / self._brightness
        longest = max(1, round(frame_duration_us * MAX_EXPOSURE_FRACTION))
        if fixed_exposure is not None:
            exposure = min(fixed_exposure, frame_duration_us)
        elif fixed_gain is not None:
            exposure = min(longest, max(1, round(needed / fixed_gain)))
        else:
            exposure = min(longest, round(needed))
        gain = fixed_gain or round(min(MAX_AUTO_GAIN, max(1.0, needed / exposure)), 3)
        if settings.colour_gains is not None:
            gains = settings.colour_gains
            temperature = temperature_for(gains)
        else:
            temperature = AWB_TEMPERATURES_K[settings.awb_mode or "auto"] or self._temperature_k
            gains = colour_gains_for(temperature)
        return CameraControls(
            exposure_time_us=exposure,
            analogue_gain=gain,
            colour_gains=gains,
            colour_temperature_k=temperature,
            frame_duration_us=frame_duration_us,
            auto_exposure=fixed_exposure is None,
            auto_white_balance=settings.colour_gains is None,
        )


def check_synthetic_settings(settings: CameraSettings) -> None:
    """CameraError for what the synthetic camera cannot do: it has no focus motor."""
    if settings.af_mode is not None or settings.lens_position is not None:
        raise CameraError(
            "the synthetic camera cannot set the focus: it has no focus motor "
            "(leave out af_mode and lens_position)"
        )
