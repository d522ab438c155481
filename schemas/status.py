"""Node heartbeat (``NodeStatus``) and node settings payloads."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pepi_fleet.schemas.camera import CameraControls, CameraSync
from pepi_fleet.schemas.camera import Resolution as Resolution  # re-exported
from pepi_fleet.schemas.ids import validate_node_id


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


class NodeSettings(BaseModel):
    """Payload of ``nodes/<node>/set``; every field optional, only given ones change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: Resolution | None = None
    jpeg_quality: int | None = Field(default=None, ge=1, le=100)
    fps: float | None = Field(default=None, gt=0, le=240)
