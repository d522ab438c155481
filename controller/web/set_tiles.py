"""A capture set as one tile per camera: its image, frame-time offset, missing or outlier.

Pure: built from the API's view of a set (``CaptureSetDetail``) and, where known, which
cameras each node has, so a camera that delivered nothing still gets a (missing) tile.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pepi_fleet.controller.ledger import ImageState
from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S
from pepi_fleet.controller.web.api_models import CaptureSetDetail


class TileState(StrEnum):
    """What a camera's tile shows."""

    IMAGE = "image"  # downloaded; thumbnail and offset shown
    PENDING = "pending"  # the node delivered a frame; its image is still being fetched
    FAILED = "failed"  # the download keeps failing
    MISSING = "missing"  # no frame of this camera in the set


@dataclass(frozen=True)
class Tile:
    """One camera of one node in a set."""

    node_id: str
    camera: int
    state: TileState
    offset_s: float | None = None  # frame time minus the set's median frame time
    outlier: bool = False
    reason: str = ""  # why a tile is missing, for people
    url: str | None = None
    thumbnail_url: str | None = None


@dataclass(frozen=True)
class SetTiles:
    """Every camera's tile, sorted by node and camera, and the reference they are timed to."""

    tiles: list[Tile]
    median_ts: float | None
    tolerance_s: float

    @property
    def missing(self) -> int:
        return sum(t.state is TileState.MISSING for t in self.tiles)

    @property
    def outliers(self) -> int:
        return sum(t.outlier for t in self.tiles)


def set_tiles(
    detail: CaptureSetDetail,
    cameras: Mapping[str, Sequence[int]] | None = None,
    tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
) -> SetTiles:
    """One tile per camera that delivered a frame, and a missing one for every camera of an
    expected node that did not (a node's cameras from ``cameras``, else camera 0)."""
    frames = {(r.node_id, f.camera): f.timestamp for r in detail.results for f in r.frames}
    median = statistics.median(frames.values()) if frames else None
    files = {(f.node_id, f.camera): f for f in detail.files}
    tiles: list[Tile] = []
    for result in detail.results:
        node = result.node_id
        known = list((cameras or {}).get(node, ()))
        delivered = sorted({f.camera for f in result.frames})
        for camera in sorted(set(known) | set(delivered) or {0}):
            key = (node, camera)
            if key not in frames:
                if result.status is None:
                    reason = "no answer"
                elif result.status != "ok":
                    reason = str(result.status)
                else:
                    reason = "no frame of this camera"
                tiles.append(Tile(node, camera, TileState.MISSING, reason=reason))
                continue
            assert median is not None
            offset = frames[key] - median
            file = files.get(key)
            if file is not None and file.state is ImageState.DONE:
                state = TileState.IMAGE
            elif file is not None and file.state is ImageState.FAILED:
                state = TileState.FAILED
            else:
                state = TileState.PENDING
            tiles.append(
                Tile(
                    node,
                    camera,
                    state,
                    offset_s=offset,
                    outlier=abs(offset) > tolerance_s,
                    url=file.url if file else None,
                    thumbnail_url=file.thumbnail_url if file else None,
                )
            )
    return SetTiles(tiles, median, tolerance_s)
