"""The set view's tiles: one per camera, timed to the set's median, missing ones marked."""

from __future__ import annotations

from typing import Any

import pytest

from pepi_fleet.controller.web.api_models import CaptureSetDetail
from pepi_fleet.controller.web.set_tiles import TileState, set_tiles

SHA = "0" * 64


def frame(camera: int, ts: float) -> dict[str, Any]:
    return {"camera": camera, "timestamp": ts, "width": 64, "height": 48, "format": "jpeg",
            "bytes": 10, "sha256": SHA}  # fmt: skip


def file(node: str, camera: int, ts: float, state: str = "done") -> dict[str, Any]:
    done = state == "done"
    url = f"/api/captures/s1/files/{node}-{camera}.jpeg"
    return {"name": f"{node}-{camera}.jpeg", "node_id": node, "camera": camera,
            "format": "jpeg", "bytes": 10, "sha256": SHA, "timestamp": ts, "state": state,
            "last_error": None, "url": url if done else None,
            "thumbnail_url": f"{url}/thumbnail" if done else None}  # fmt: skip


def detail(results: list[dict[str, Any]], files: list[dict[str, Any]]) -> CaptureSetDetail:
    fields = {"capture_id": "s1", "kind": "explicit", "state": "incomplete",
              "triggered_at": 99.0, "at": None, "target_node": None,
              "expected": [r["node_id"] for r in results], "completed_at": 101.0,
              "spread_s": None, "fired_spread_s": None, "images_total": 3, "images_done": 2,
              "images_failed": 0, "url": "/api/captures/s1", "zip_url": "/api/captures/s1/zip",
              "results": results, "files": files}  # fmt: skip
    return CaptureSetDetail.model_validate(fields)


def test_set_tiles_offsets_from_median_outlier_missing_and_pending() -> None:
    d = detail(
        [
            {"node_id": "a", "status": "ok", "frames": [frame(0, 100.000), frame(1, 100.002)]},
            {"node_id": "b", "status": "ok", "frames": [frame(0, 100.004)]},
            {"node_id": "c", "status": "ok", "frames": [frame(0, 100.500)]},
            {"node_id": "d", "status": None},
            {"node_id": "e", "status": "late", "error": "armed after at"},
        ],
        [
            file("a", 0, 100.000),
            file("a", 1, 100.002),
            file("b", 0, 100.004, "downloading"),
            file("c", 0, 100.500),
        ],
    )
    tiles = set_tiles(d, {"b": [0, 1]}, tolerance_s=0.1)
    by_key = {(t.node_id, t.camera): t for t in tiles.tiles}
    assert tiles.median_ts == pytest.approx(100.003)
    assert by_key["a", 0].offset_s == pytest.approx(-0.003)
    assert by_key["a", 0].state is TileState.IMAGE and by_key["a", 0].thumbnail_url
    assert by_key["b", 0].state is TileState.PENDING and by_key["b", 0].thumbnail_url is None
    assert by_key["c", 0].outlier and not by_key["a", 1].outlier
    assert by_key["b", 1].state is TileState.MISSING and "no frame" in by_key["b", 1].reason
    assert by_key["d", 0].reason == "no answer" and by_key["e", 0].reason == "late"
    assert (tiles.missing, tiles.outliers) == (3, 1)
    assert list(by_key) == sorted(by_key)


def test_set_tiles_of_a_set_nobody_answered_has_no_median() -> None:
    tiles = set_tiles(detail([{"node_id": "a", "status": None}], []))
    assert tiles.median_ts is None
    assert [t.state for t in tiles.tiles] == [TileState.MISSING]
