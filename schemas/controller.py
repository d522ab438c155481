"""What the controller publishes about completed capture sets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pepi_fleet.schemas.capture import CaptureStatus


class NodeOutcome(BaseModel):
    """One node's part in a capture set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    status: CaptureStatus | None = Field(description="null when the node never answered")
    frames: int = 0
    error: str | None = None
    fired_at: float | None = Field(default=None, description="node clock, Unix s")
    fire_offset_s: float | None = Field(
        default=None,
        description="fired_at minus the set's reference: its scheduled time, else the median "
        "fired_at of the set",
    )
    outlier: bool = Field(default=False, description="fired outside the set's tolerance")


class CaptureSetSummary(BaseModel):
    """Published on ``controller/captures`` when a set is complete."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capture_id: str
    triggered_at: float
    completed_at: float
    expected: list[str]
    outcomes: list[NodeOutcome]
    spread_s: float | None = Field(description="max - min frame timestamp over all frames")
    fired_spread_s: float | None = None
    complete: bool = Field(
        description="every expected node answered ok, with every camera, within the set's "
        "fire tolerance; false: the set is incomplete and `problems` says why"
    )
    missing: list[str] = Field(
        default_factory=list, description="expected nodes that never answered"
    )
    unreachable: dict[str, list[str]] = Field(
        default_factory=dict,
        description="site -> its nodes the trigger could not reach: the site's bridge to the "
        "controller's broker was down, so they were not triggered (not in `missing`)",
    )
    outliers: list[str] = Field(
        default_factory=list, description="nodes whose fired_at lies outside the tolerance"
    )
    late_nodes: list[str] = Field(
        default_factory=list,
        description="scheduled set: nodes that received the trigger after its time (on their "
        "own clock), so could not arm in time: answered late, or fired on receipt",
    )
    fire_tolerance_s: float | None = None
    problems: list[str] = Field(
        default_factory=list, description="why the set is incomplete, one line per problem"
    )
    downloaded: bool = Field(
        default=False, description="every image owed by the answering nodes is verified on disk"
    )
    data_dir: str | None = Field(default=None, description="controller folder holding the set")
    files: list[str] = Field(default_factory=list, description="verified files, relative paths")
