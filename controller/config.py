"""The controller's one configuration model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S
from pepi_fleet.schemas.topics import DEFAULT_ROOT

DEFAULT_CLOCK_TOLERANCE_S = 0.002
"""How far a node's clock may be from the controller's before a scheduled capture warns."""


def password_from_file(path: Path) -> str:
    """The password in ``path``: its first line, without the line break (ValueError if none)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the password file {path}: {exc}") from exc
    if not lines or not lines[0]:
        raise ValueError(f"the password file {path} is empty")
    return lines[0]


class ControllerConfig(BaseModel):
    """Everything ``pepi controller`` needs; loaded once in main() and passed down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    """Where the MQTT password is kept (read when the config is loaded; it wins over
    ``password``, as the node's does)."""
    ca_file: Path | None = None
    topic_root: str = DEFAULT_ROOT
    data_dir: Path
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, lt=65536)
    auth: Literal["auto", "on", "off"] = "auto"
    """Login for the page and API: ``auto`` requires one unless ``web_host`` is loopback."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names the page may be reached by, besides the listen address (``*``: any)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) to serve the page and API over HTTPS, with ``tls_key``."""
    tls_key: Path | None = None
    set_timeout_s: float = Field(default=10.0, gt=0)
    download_wait_s: float = Field(
        default=120.0, gt=0, description="how long a summary waits for downloads to finish"
    )
    download_workers: int = Field(default=8, ge=1, le=64)
    thrift_hold_s: float = Field(
        default=600.0,
        ge=0,
        description="how long a capture a PEPI client started over Thrift stays on its node "
        "after the controller has its copy (PEPI's client retrieves it later by code)",
    )
    thrift_timeout_ms: int = Field(default=30000, ge=100)
    fire_tolerance_s: float = Field(
        default=DEFAULT_FIRE_TOLERANCE_S,
        gt=0,
        allow_inf_nan=False,
        description="a node that fired further than this from its set's reference (the "
        "scheduled time, else the median) is an outlier and the set incomplete",
    )
    trigger_expiry_s: int = Field(
        default=2,
        ge=1,
        le=3600,
        description="MQTT 5 message expiry of immediate triggers: a node that gets one later "
        "answers late instead of firing",
    )
    discovery: bool = True
    """Announce the controller to Home Assistant (MQTT discovery) and take its commands."""
    discovery_prefix: str = Field(
        default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )
    align_fps: float = Field(default=30.0, ge=1, le=240, allow_inf_nan=False)
    """Frame rate whose grid Home Assistant's scheduled captures are aligned to."""
    clock_tolerance_s: float = Field(
        default=DEFAULT_CLOCK_TOLERANCE_S,
        gt=0,
        allow_inf_nan=False,
        description="warn before a scheduled capture beyond this offset",
    )

    preview_linger_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="how long the preview relay keeps pulling a camera after its last viewer left",
    )
    preview_max_watch: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="previews one WebSocket viewer may watch at once",
    )

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("password_file") is not None:
            data = {**data, "password": password_from_file(Path(data["password_file"]))}
        return data

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give --tls-cert and --tls-key together (or neither)")
        return self
