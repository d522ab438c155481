"""Camera sensor settings, the values a camera reports back, and its frame-sync state."""

from __future__ import annotations

from typing import Annotated, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pepi_fleet.schemas.errors import PayloadError

Resolution = tuple[Annotated[int, Field(gt=0, le=20000)], Annotated[int, Field(gt=0, le=20000)]]

AwbMode = Literal[
    "auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy", "custom"
]
"""libcamera's AwbMode values: the illuminant range automatic white balance searches."""
AfMode = Literal["manual", "auto", "continuous"]
"""libcamera's AfMode values (only cameras with a focus motor, e.g. Camera Module 3)."""
SyncMode = Literal["off", "server", "client", "unsupported"]
"""A camera's libcamera software sync: off, server, client, or not available in its libcamera."""

ColourGain = Annotated[float, Field(gt=0, le=32)]
MAX_EXPOSURE_US = 60_000_000


class CameraSettings(BaseModel):
    """Sensor settings for every camera of a node; every field optional, only given ones change.

    ``exposure_time_us`` and ``analogue_gain`` 0 hand the value back to auto exposure.
    ``awb_mode`` turns automatic white balance on in that mode; ``colour_gains`` turn it off
    at fixed red and blue gains. ``lens_position`` implies manual focus.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    exposure_time_us: int | None = Field(
        default=None, ge=0, le=MAX_EXPOSURE_US, description="µs; 0 = automatic"
    )
    analogue_gain: float | None = Field(default=None, ge=0, le=64, description="0 = automatic")
    awb_mode: AwbMode | None = None
    colour_gains: tuple[ColourGain, ColourGain] | None = Field(
        default=None, description="fixed (red, blue) gains; turns automatic white balance off"
    )
    af_mode: AfMode | None = None
    lens_position: float | None = Field(
        default=None, ge=0, le=32, description="dioptres (1 / focus distance in m; 0 = infinity)"
    )
    resolution: Resolution | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.awb_mode is not None and self.colour_gains is not None:
            raise ValueError(
                "give either awb_mode (automatic white balance) or colour_gains (fixed), not both"
            )
        if self.lens_position is not None and self.af_mode not in (None, "manual"):
            raise ValueError(f"lens_position needs af_mode 'manual', not {self.af_mode!r}")
        return self


S = TypeVar("S", bound=CameraSettings)


def merge_settings(applied: S, change: CameraSettings) -> S:
    """``applied`` with the fields ``change`` gives; white balance and focus stay consistent.

    Fixed colour gains replace an AWB mode and the other way round; a lens position means
    manual focus, an automatic focus mode drops the lens position.
    """
    update = change.model_dump(exclude_none=True)
    if change.awb_mode is not None:
        update["colour_gains"] = None
    if change.colour_gains is not None:
        update["awb_mode"] = None
    if change.lens_position is not None:
        update["af_mode"] = "manual"
    elif change.af_mode not in (None, "manual"):
        update["lens_position"] = None
    merged = {k: v for k, v in (applied.model_dump() | update).items() if v is not None}
    return type(applied).model_validate(merged, strict=False)


class CameraControls(BaseModel):
    """What a camera applied to its latest frame (read back from the frame's metadata)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exposure_time_us: int | None = None
    analogue_gain: float | None = None
    colour_gains: tuple[float, float] | None = None
    colour_temperature_k: int | None = None
    lens_position: float | None = None
    frame_duration_us: int | None = None
    auto_exposure: bool | None = None
    auto_white_balance: bool | None = None
    af_mode: AfMode | None = None


def locked_settings(controls: CameraControls) -> CameraSettings:
    """Settings that hold a camera at ``controls``' exposure, gain and white balance.

    The "lock exposure" step: let one reference camera settle its automatic exposure and
    white balance, read its controls, and apply these settings to every camera.
    Raises PayloadError if the reading lacks one of the three values.
    """
    exposure, gain, gains = (
        controls.exposure_time_us,
        controls.analogue_gain,
        controls.colour_gains,
    )
    if exposure is None or gain is None or gains is None:
        raise PayloadError(
            "cannot lock exposure: the reference camera reported no exposure time, gain or "
            "colour gains yet; wait for it to deliver frames and read its controls again"
        )
    focus = {}
    if controls.lens_position is not None:  # a focus motor: hold the lens where it is too
        focus = {"af_mode": "manual", "lens_position": controls.lens_position}
    return CameraSettings.model_validate(
        {"exposure_time_us": max(1, exposure), "analogue_gain": gain, "colour_gains": gains} | focus
    )


class CameraSync(BaseModel):
    """libcamera software camera sync of one camera, as of its latest frame."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SyncMode
    ready: bool | None = Field(
        default=None, description="SyncReady: server and clients agree frames are in sync"
    )
    timer_us: int | None = Field(
        default=None, description="SyncTimer: µs to the ready time (negative once past it)"
    )
    lag_us: int | None = Field(
        default=None,
        description="SyncTimer on the frame SyncReady turned true: how closely in sync it is",
    )
    detail: str | None = None
