"""Request and response models of the REST API, built on the ``schemas`` contracts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pepi_fleet.controller.access import Role
from pepi_fleet.controller.ledger import ImageState, SetRecord
from pepi_fleet.controller.set_quality import by_site
from pepi_fleet.schemas.capture import (
    DEFAULT_SCHEDULE_HORIZON_S,
    CaptureStatus,
    Frame,
    schedule_too_far_ahead,
)
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import validate_capture_id, validate_node_id

logger = logging.getLogger(__name__)

MAX_DELAY_S = 24 * 3600.0
AUTO = Literal["auto"]
MAX_TOLERANCE_MS = 60_000.0
API = "/api"
THUMBNAIL_FORMATS = ("jpeg", "png")


def _invalid_is_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    # pydantic reports ValueError as a validation error (422); PayloadError would escape it.
    def run(value: str) -> str:
        try:
            return check(value)
        except PayloadError as exc:
            raise ValueError(str(exc)) from exc

    return run


CaptureId = Annotated[str, AfterValidator(_invalid_is_value_error(validate_capture_id))]
NodeId = Annotated[str, AfterValidator(_invalid_is_value_error(validate_node_id))]


class ApiError(BaseModel):
    """Every 4xx/5xx answer: one line saying what was wrong and what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detail: str


class CaptureRequest(BaseModel):
    """``POST /api/captures``: every field optional; ``at`` and ``delay`` exclude each other."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    capture_id: CaptureId | None = Field(
        default=None, description="explicit set id (becomes a folder name); absent = cap-<UTC ms>"
    )
    node_id: NodeId | None = Field(default=None, description="trigger only this node")
    at: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="fire at this Unix time (node clocks)"
    )
    delay: Annotated[float, Field(ge=0, le=MAX_DELAY_S, allow_inf_nan=False)] | AUTO | None = Field(
        default=None,
        description='fire this many seconds from now (a scheduled capture); "auto": as '
        "far ahead as the nodes' measured trigger delivery needs (see GET /api/status)",
    )
    tolerance_ms: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TOLERANCE_MS,
        allow_inf_nan=False,
        description="with 'at' or 'delay': warn about nodes whose clock may be further off "
        "than this (absent = the controller's --clock-tolerance-ms)",
    )

    @model_validator(mode="after")
    def _one_time(self) -> Self:
        if self.at is not None and self.delay is not None:
            raise ValueError("give 'at' or 'delay', not both")
        if self.tolerance_ms is not None and self.at is None and self.delay is None:
            raise ValueError("'tolerance_ms' applies to a scheduled capture: add 'at' or 'delay'")
        # the nodes refuse it anyway (error: at too far ahead): say so before triggering
        too_far = schedule_too_far_ahead(self.at, time.time(), DEFAULT_SCHEDULE_HORIZON_S)
        if too_far is not None:
            raise ValueError(too_far)
        return self

    @property
    def tolerance_s(self) -> float | None:
        """``tolerance_ms`` in seconds, None when not given."""
        return None if self.tolerance_ms is None else self.tolerance_ms / 1000

    def fire_at(self, now: float, auto_lead_s: float) -> float | None:
        """The ``at`` to send: given, now + delay (``auto``: + ``auto_lead_s``), or None for
        an immediate capture."""
        if self.delay == "auto":
            return now + auto_lead_s
        return now + self.delay if self.delay is not None else self.at


class CaptureAccepted(BaseModel):
    """The trigger was handed to the broker; the set opens when the broker echoes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capture_id: str
    node_id: str | None
    at: float | None
    url: str = Field(description="where the capture set will be")
    clock_warnings: list[str] = Field(
        description="scheduled capture: expected nodes whose clock may be off by more than "
        "the tolerance, or is not measured yet (one line each); empty when all are in sync "
        "and for an immediate capture"
    )


class ControllerStatusOut(BaseModel):
    """``GET /api/status``: the controller's link and the lead it schedules captures with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker_connected: bool
    trigger_lead_s: float = Field(
        description='how far ahead `delay: "auto"` (and `pepi capture --delay auto`) '
        "schedules a capture: the slowest node's latency plus margins, within a floor and "
        "a ceiling (a default until some node's latency is measured)"
    )
    trigger_latency_s: float | None = Field(
        description="the slowest online node's trigger delivery latency (p99 of its latest "
        "triggers, corrected for its clock offset); null until measured"
    )
    latency_nodes: int = Field(description="online nodes whose delivery latency is measured")
    slowest_node: str | None = Field(description="one node with that latency")


class CaptureSetOut(BaseModel):
    """One capture set in the history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capture_id: str
    kind: str = Field(description="explicit, auto or orphan")
    state: str = Field(
        description="open while nodes may still answer, then complete, or incomplete when a "
        "node or camera is missing or a node fired outside the tolerance"
    )
    triggered_at: float
    at: float | None
    target_node: str | None
    expected: list[str]
    unreachable: dict[str, list[str]] = Field(
        default_factory=dict,
        description="site -> its nodes the trigger could not reach: the site's bridge was "
        "down, so they were not triggered (not expected, yet the set is incomplete)",
    )
    completed_at: float | None
    spread_s: float | None = Field(description="max - min frame timestamp over all frames")
    fired_spread_s: float | None
    images_total: int
    images_done: int
    images_failed: int
    url: str
    zip_url: str

    @classmethod
    def of(cls, record: SetRecord, **more: object) -> Self:
        """Build from a ledger record (``more``: the detail view's extra fields)."""
        base = f"{API}/captures/{record.set_id}"
        shared = {k: v for k, v in asdict(record).items() if k in CaptureSetOut.model_fields}
        shared["unreachable"] = by_site(record.unreachable)
        urls = {"url": base, "zip_url": f"{base}/zip"}
        return cls.model_validate({**shared, "capture_id": record.set_id, **urls, **more})


class CapturePage(BaseModel):
    """``GET /api/captures``: newest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: list[CaptureSetOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class NodeResultOut(BaseModel):
    """One expected or answering node's part in a set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    status: CaptureStatus | None = Field(
        default=None, description="null while (or if) the node has not answered"
    )
    node_capture_id: str | None = None
    received_at: float | None = None
    fired_at: float | None = None
    error: str | None = None
    frames: list[Frame] = Field(default_factory=list)
    released: bool = Field(default=False, description="the node was told it may delete its copy")


class FileOut(BaseModel):
    """One image a node owes the set; ``url`` is set once it is verified on disk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    node_id: str
    camera: int
    format: str
    bytes: int
    sha256: str
    timestamp: float
    state: ImageState
    last_error: str | None
    url: str | None
    thumbnail_url: str | None


class CaptureSetDetail(CaptureSetOut):
    """``GET /api/captures/{id}``: the set with per-node results and files."""

    results: list[NodeResultOut]
    files: list[FileOut]


class LoginRequest(BaseModel):
    """``POST /api/login``: a user created with ``pepi controller user add``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    """Who the request comes from, and whether this controller requires a login."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str | None = Field(description="the user or API token's name; null when not logged in")
    role: Role | None = Field(description="viewer (look) or operator (also capture, settings)")
    login_required: bool
