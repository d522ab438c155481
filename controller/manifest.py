"""Files in the data dir: atomic writes and each capture set's ``manifest.json``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pepi_fleet.controller.ledger import ImageState, SetDetail
from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S, assess
from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.schemas import CaptureStatus
from pepi_fleet.schemas.camera import CameraControls

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


class ManifestFrame(BaseModel):
    """One camera's image of one node; ``file`` is None until it is downloaded and verified."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: int
    timestamp: float
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    file: str | None
    in_sync: bool | None = None
    """Taken while frame-locked (libcamera SyncReady); None: the camera does not use sync."""
    controls: CameraControls | None = None
    """Exposure, gain, white balance and focus the camera applied to this frame."""


class ManifestNode(BaseModel):
    """One node's answer in the set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    node_capture_id: str
    status: CaptureStatus
    received_at: float
    fired_at: float | None
    error: str | None
    frames: list[ManifestFrame]
    clock_offset_s: float | None = None
    """Node clock minus controller clock, measured over MQTT (best of recent pings)."""
    clock_rtt_s: float | None = None


class Manifest(BaseModel):
    """``<data_dir>/<set>/manifest.json``: what the set holds and how well it was synchronised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capture_id: str
    triggered_at: float
    at: float | None
    completed_at: float | None
    expected: list[str]
    nodes: list[ManifestNode]
    cameras: list[int]
    files: list[str]
    spread_s: float | None
    fired_spread_s: float | None
    clock_uncertainty_s: float | None = None
    """Worst half round trip of the nodes' clock probes: how far apart the clocks the
    timestamps come from may be beyond what the offsets say (None: not all measured)."""
    downloaded: bool
    complete: bool | None = None
    """Every expected node delivered every camera within the fire tolerance (None: open)."""
    missing: list[str] = []
    unreachable: dict[str, list[str]] = {}
    """site -> its nodes the trigger could not reach (the site's bridge was down)."""
    outliers: list[str] = []
    problems: list[str] = []
    """Why the set is incomplete, one line each."""
    written_at: float


ClockOf = Callable[[str], tuple[float, float] | None]
"""node id -> (clock offset s, round trip s), if measured."""


def build_manifest(
    detail: SetDetail,
    written_at: float,
    clock_of: ClockOf | None = None,
    fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
) -> Manifest:
    """The manifest of one set as the ledger knows it now; lists only verified files."""
    clocks = {r.node_id: clock_of(r.node_id) if clock_of else None for r in detail.results}
    done = {
        (img.node_id, img.camera): Path(img.path).name
        for img in detail.images
        if img.state is ImageState.DONE
    }
    nodes = [
        ManifestNode(
            node_id=r.node_id,
            node_capture_id=r.node_capture_id,
            status=r.result.status,
            received_at=r.result.received_at,
            fired_at=r.result.fired_at,
            error=r.result.error,
            frames=[
                ManifestFrame(**f.model_dump(), file=done.get((r.node_id, f.camera)))
                for f in r.result.frames
            ],
            **_clock_fields(clocks[r.node_id]),
        )
        for r in detail.results
    ]
    rtts = [n.clock_rtt_s for n in nodes if n.clock_rtt_s is not None]
    all_measured = bool(nodes) and len(rtts) == len(nodes)
    record = detail.record
    verdict = assess(
        record.expected,
        {r.node_id: r.result for r in detail.results},
        at=record.at,
        tolerance_s=fire_tolerance_s,
        unreachable=record.unreachable,
    )
    return Manifest(
        capture_id=record.set_id,
        triggered_at=record.triggered_at,
        at=record.at,
        completed_at=record.completed_at,
        expected=list(record.expected),
        nodes=nodes,
        cameras=sorted({f.camera for n in nodes for f in n.frames}),
        files=sorted(done.values()),
        spread_s=record.spread_s,
        fired_spread_s=record.fired_spread_s,
        clock_uncertainty_s=max(rtts) / 2 if all_measured else None,
        downloaded=all(img.state is ImageState.DONE for img in detail.images),
        complete=None
        if record.completed_at is None
        else bool(record.expected) and verdict.complete,
        missing=verdict.missing,
        unreachable=verdict.unreachable,
        outliers=verdict.outliers,
        problems=verdict.problems,
        written_at=written_at,
    )


def _clock_fields(clock: tuple[float, float] | None) -> dict[str, float | None]:
    offset, rtt = clock if clock is not None else (None, None)
    return {"clock_offset_s": offset, "clock_rtt_s": rtt}


def write_manifest(
    data_dir: Path,
    detail: SetDetail,
    written_at: float | None = None,
    clock_of: ClockOf | None = None,
    fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
) -> Path:
    """Write the set's manifest atomically; return its path."""
    when = time.time() if written_at is None else written_at
    manifest = build_manifest(detail, when, clock_of, fire_tolerance_s)
    path = data_dir / detail.record.set_id / MANIFEST_FILE
    write_atomic(path, (manifest.model_dump_json(indent=2) + "\n").encode())
    logger.debug("wrote %s", path)
    return path
