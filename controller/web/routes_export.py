"""Capture sets as zips laid out for photogrammetry tools (flat, Meshroom, COLMAP)."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from pepi_fleet.controller.export import ExportError, Layout, load_sets, plan_export
from pepi_fleet.controller.manifest import MANIFEST_FILE
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.api_models import ApiError
from pepi_fleet.controller.web.routes_deps import (
    ERRORS,
    CaptureIdPath,
    ControllerDep,
    unknown_capture,
)
from pepi_fleet.controller.zip_stream import stream_zip
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import validate_capture_id

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["export"], responses=ERRORS)

MAX_SETS = 1000
MISSING_HEADER = "X-Pepi-Missing-Images"
LayoutQuery = Annotated[
    Layout,
    Query(
        description="flat: one folder; meshroom: rig/<camera index>/<frame>; colmap: "
        "images/<camera>/<frame> plus rig_config.json (COLMAP 3.12+)"
    ),
]
ZIP: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {}},
        "description": f"Streamed zip; {MISSING_HEADER} counts frames x cameras without "
        "an image (pepi-export.json in the zip names them)",
    },
    409: {"model": ApiError, "description": "No image of the set(s) is downloaded yet"},
}


def export_url(capture_id: str, layout: Layout) -> str:
    """Where the page links one set's export."""
    return f"/api/captures/{capture_id}/export?{urlencode({'layout': layout})}"


@router.get(
    "/captures/{capture_id}/export", summary="Export one set for a tool, as a zip", responses=ZIP
)
def export_set(
    capture_id: CaptureIdPath, controller: ControllerDep, layout: LayoutQuery = "flat"
) -> StreamingResponse:
    """The set's verified images laid out for Meshroom or COLMAP (or flat), with its manifest
    and pepi-export.json, which names any camera whose image is missing."""
    return _export_zip(controller, [capture_id], layout)


@router.get("/export", summary="Export several sets for a tool, as a zip", responses=ZIP)
def export_sets(
    controller: ControllerDep,
    sets: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_SETS * 65,
            description="capture set ids, comma-separated, in frame order",
        ),
    ],
    layout: LayoutQuery = "flat",
) -> StreamingResponse:
    """Several sets as consecutive frames (rig poses) of one export, in the order given."""
    ids = [s.strip() for s in sets.split(",") if s.strip()]
    if not ids:
        raise HTTPException(422, "sets: give capture set ids separated by commas")
    if len(ids) > MAX_SETS:
        raise HTTPException(422, f"sets: at most {MAX_SETS} sets per export")
    for set_id in ids:
        try:
            validate_capture_id(set_id)
        except PayloadError as exc:
            raise HTTPException(422, f"sets: {exc}") from exc
    if len(set(ids)) != len(ids):
        raise HTTPException(422, "sets: name each capture set once")
    return _export_zip(controller, ids, layout)


def _export_zip(controller: Controller, ids: list[str], layout: Layout) -> StreamingResponse:
    data_dir = controller.config.data_dir
    for set_id in ids:
        if controller.ledger.get_set(set_id) is None:
            raise unknown_capture(set_id)
        if not (data_dir / set_id / MANIFEST_FILE).is_file():
            raise HTTPException(
                409, f"capture set {set_id} has no downloaded images yet: try again shortly"
            )
    # What `pepi export` reads too: the manifests, rewritten after every download pass.
    try:
        plan = plan_export(load_sets(data_dir, ids), layout)
    except ExportError as exc:
        raise HTTPException(409, str(exc)) from exc
    members = [(f"{plan.name}/{rel}", source) for rel, source in plan.members()]
    return StreamingResponse(
        stream_zip(members),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{plan.name}.zip"',
            MISSING_HEADER: str(plan.summary.missing),
        },
    )
