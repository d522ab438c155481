"""The lock-exposure exchange: the controller asks a reference node to meter, the node answers."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.ids import validate_node_id

MAX_SETTLE_S = 30.0
DEFAULT_SETTLE_S = 1.5
"""Long enough for libcamera's AGC/AWB to converge from a change of scene (~1 s at 30 fps)."""


class MeterRequest(BaseModel):
    """Payload of ``nodes/<node>/meter``: put every camera of the node on automatic exposure
    and white balance, wait ``settle_s``, report what ``camera`` settled on."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    request_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    camera: int = Field(default=0, ge=0, le=15)
    settle_s: float = Field(default=DEFAULT_SETTLE_S, ge=0, le=MAX_SETTLE_S, allow_inf_nan=False)


class MeterReading(BaseModel):
    """Payload of ``nodes/<node>/meter/reading``: the reference camera's settled values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    node_id: Annotated[str, AfterValidator(validate_node_id)]
    camera: int = Field(ge=0)
    controls: CameraControls | None = Field(
        default=None, description="exposure, gain, white balance, focus; null with an error"
    )
    error: str | None = Field(default=None, description="why the node could not meter")
