"""Node heartbeat (``NodeStatus``) and node settings payloads."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pepi_fleet.schemas.camera import CameraControls, CameraSettings, CameraSync
from pepi_fleet.schemas.camera import Resolution as Resolution  # re-exported
from pepi_fleet.schemas.ids import validate_node_id, validate_site_id

MIN_SIDE = 16
MAX_SIDE = 20000
MIN_FPS = 1.0
"""Below one frame a second an immediate capture would wait seconds for its frame."""
MAX_FPS = 240.0
MIN_JPEG_QUALITY = 1
MAX_JPEG_QUALITY = 100
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]
CaptureResolution = tuple[Side, Side]
"""A resolution a camera may be asked for (each camera refuses what its sensor lacks)."""
FrameRate = Annotated[float, Field(ge=MIN_FPS, le=MAX_FPS, allow_inf_nan=False)]
JpegQuality = Annotated[int, Field(ge=MIN_JPEG_QUALITY, le=MAX_JPEG_QUALITY)]
HEALTH_OK = "ok"


class ThriftEndpoint(BaseModel):
    """Where the node's Thrift CameraServer listens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(gt=0, lt=65536)


class CameraInfo(BaseModel):
    """One camera on a node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    model: str
    resolution: Resolution
    max_resolution: Resolution
    fps: float | None = Field(
        default=None, description="frame rate the sensor delivers (read back); null = unknown"
    )
    sync: CameraSync | None = Field(default=None, description="libcamera camera sync state")
    controls: CameraControls | None = Field(
        default=None, description="exposure, gain, white balance, focus as last applied"
    )


class StoreInfo(BaseModel):
    """The node's capture store, as a controller needs to see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    captures: int = Field(ge=0)
    bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0, description="what the store may still take (limit and disk)")


class ClockInfo(BaseModel):
    """What the node knows about its own clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    synced: bool | None = Field(description="the OS says the clock is synchronised; null = unknown")
    offset_estimate_s: float | None = None


class NodeStatus(BaseModel):
    """Retained heartbeat on ``nodes/<node>/status``, republished every ``heartbeat_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: Annotated[str, AfterValidator(validate_node_id)]
    sent_at: float
    heartbeat_s: float = Field(gt=0)
    version: str
    thrift: ThriftEndpoint
    cameras: list[CameraInfo]
    stream_urls: list[str]
    store: StoreInfo
    clock: ClockInfo
    last_capture_at: float | None = Field(
        default=None, description="fired_at of the newest capture this node took or holds"
    )
    sync_role: Literal["server", "client", "auto", "elected"] | None = Field(
        default=None,
        description="frame-locked Pi cameras: how this node's sync role is chosen "
        "('elected': it follows the controller's election on <root>/sync/server)",
    )
    jpeg_quality: int | None = Field(
        default=None, description="JPEG quality the node encodes at (as last applied)"
    )
    health: str = Field(
        default=HEALTH_OK,
        max_length=500,
        description="'ok', or 'degraded: <reason>' when a worker of the node is not progressing",
    )
    site: Annotated[str, AfterValidator(validate_site_id)] | None = Field(
        default=None,
        description="the site whose broker the node uses, when that broker is bridged to a "
        "central one: the controller marks the node unreachable while that bridge is down",
    )


class NodeSettings(CameraSettings):
    """Payload of ``nodes/<node>/set`` and of the fleet's ``settings``; every field optional,
    only given ones change.

    The camera fields (exposure, gain, white balance, focus) are ``CameraSettings``'; a node
    applies them to every camera it has. Out-of-range or inconsistent values are refused as a
    whole: nothing of a refused payload is applied."""

    # strict: JSON true is not the number 1, "30" is not a frame rate
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    resolution: CaptureResolution | None = None
    jpeg_quality: JpegQuality | None = None
    fps: FrameRate | None = None

    def camera_settings(self) -> CameraSettings:
        """The sensor part (exposure, gain, white balance, focus), resolution left out."""
        fields = self.model_dump(include=set(CAMERA_FIELDS), exclude_none=True)
        return CameraSettings.model_validate(fields)

    def has_camera_settings(self) -> bool:
        """Whether any sensor field (exposure, gain, white balance, focus) is given."""
        return any(getattr(self, name) is not None for name in CAMERA_FIELDS)


CAMERA_FIELDS = (
    "exposure_time_us",
    "analogue_gain",
    "awb_mode",
    "colour_gains",
    "af_mode",
    "lens_position",
)
"""The ``NodeSettings`` fields a camera applies through ``apply_settings``."""
