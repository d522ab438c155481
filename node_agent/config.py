"""The node agent's one configuration model (flags, PEPI_* environment, config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pepi_fleet.schemas.capture import DEFAULT_SCHEDULE_HORIZON_S
from pepi_fleet.schemas.ids import validate_node_id, validate_site_id
from pepi_fleet.schemas.status import CaptureResolution, FrameRate, JpegQuality
from pepi_fleet.schemas.topics import DEFAULT_ROOT


class NodeConfig(BaseModel):
    """Everything ``pepi node`` needs; loaded once in main() and passed down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = Field(default=None, description="MQTT username (default: node id)")
    password: str | None = None
    ca_file: Path | None = None
    node_id: Annotated[str, AfterValidator(validate_node_id)]
    topic_root: str = DEFAULT_ROOT
    site: Annotated[str, AfterValidator(validate_site_id)] | None = None
    """The site whose bridged broker this node uses (reported in its status)."""
    data_dir: Path
    thrift_host: str = "0.0.0.0"
    thrift_port: int = Field(default=6000, ge=0, lt=65536)
    thrift_max_clients: int = Field(default=32, ge=1, le=4096)
    """Thrift connections (and threads) at once; idle and slow ones give way to new ones."""
    thrift_timeout_s: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)
    """A Thrift client silent (or not reading) this long is dropped."""
    advertise_host: str | None = None
    stream_port: int = Field(default=6001, ge=-1, lt=65536)
    stream_fps: float = Field(default=4.0, gt=0, le=30)
    stream_max_clients: int = Field(default=16, ge=1, le=4096)
    """MJPEG connections (and threads) at once; idle and stuck ones give way to new ones."""
    stream_timeout_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    """An MJPEG client silent (or not reading) this long is dropped."""
    camera: Literal["synthetic", "folder", "picamera2"] = "synthetic"
    camera_count: int = Field(default=1, ge=1, le=4)
    folder: Path | None = None
    resolution: CaptureResolution = (1920, 1080)
    fps: FrameRate = 30.0
    frame_lock: bool = False
    sync_role: Literal["server", "client", "auto", "elected"] = "auto"
    heartbeat_s: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)
    late_tolerance_s: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    schedule_horizon_s: float = Field(
        default=DEFAULT_SCHEDULE_HORIZON_S, gt=0, le=366 * 24 * 3600, allow_inf_nan=False
    )
    """An ``at`` further ahead than this is refused (``error: at too far ahead``)."""
    remember_ids: int = Field(default=10_000, ge=1, le=10_000_000)
    """How many capture ids taken over MQTT the node remembers (``duplicate`` for a repeat)."""
    remember_days: float = Field(default=30.0, gt=0, le=3650, allow_inf_nan=False)
    """Ids older than this many days are forgotten (whichever bound is reached first)."""
    watchdog_stall_s: float = Field(default=30.0, ge=1, le=3600, allow_inf_nan=False)
    """A worker with work waiting and no progress for this long makes the node ``degraded``;
    four times as long, or a dead worker, makes it exit (non-zero) for its supervisor."""
    jpeg_quality: JpegQuality = 90
    max_store_bytes: int = Field(default=2 * 1024**3, gt=0)
    min_free_bytes: int = Field(default=256 * 1024**2, ge=0)
    evict_retrieved: bool = False
    allow_shutdown: bool = False
    thrift_pepi: bool = True
    """Serve PEPI's own Thrift methods (off: only the controller's extension, with its secret)."""
    discovery: bool = True
    """Publish Home Assistant MQTT discovery for this node."""
    discovery_prefix: str = Field(
        default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )
    live_preview_s: float = Field(default=10.0, ge=0, le=3600, allow_inf_nan=False)
    """A small live JPEG for Home Assistant's camera entity this often (0: never)."""
