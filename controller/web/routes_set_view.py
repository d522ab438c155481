"""``/sets/{capture_id}``: every camera's image of one set side by side, timed to its median."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from pepi_fleet.controller.web.routes_captures import capture_detail
from pepi_fleet.controller.web.routes_deps import CaptureIdPath, ControllerDep, unknown_capture
from pepi_fleet.controller.web.routes_page import (
    NO_CACHE,
    Safe,
    join,
    render,
    static_version,
    tag,
    when,
)
from pepi_fleet.controller.web.set_tiles import SetTiles, Tile, TileState, set_tiles

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def offset_text(offset_s: float | None) -> str:
    """A frame's offset from the set's median, in milliseconds."""
    return "" if offset_s is None else f"{offset_s * 1000:+.3f} ms"


def tile(t: Tile) -> Safe:
    """One camera's figure: thumbnail (or why there is none), label and offset."""
    label = f"{t.node_id} cam{t.camera}"
    if t.state is TileState.IMAGE and t.thumbnail_url and t.url:
        img = Safe(f'<img src="{t.thumbnail_url}" alt="{label}" loading="lazy">')
        body = tag("a", img, href=t.url, target="_blank", rel="noopener")
    elif t.state is TileState.MISSING:
        body = tag("span", f"missing: {t.reason}", class_="thumb missing")
    elif t.state is TileState.FAILED:
        body = tag("span", "download failing, retrying", class_="thumb failed")
    else:
        body = tag("span", "downloading…", class_="thumb pending")
    offset = offset_text(t.offset_s)
    caption = join(
        [
            tag("b", label),
            tag("span", offset + (" outlier" if t.outlier else ""), class_="offset"),
        ]
    )
    cls = f"tile tile-{t.state.value}" + (" outlier" if t.outlier else "")
    return tag(
        "figure",
        join([body, tag("figcaption", caption)]),
        class_=cls,
        data_node=t.node_id,
        data_camera=t.camera,
        data_offset_ms="" if t.offset_s is None else f"{t.offset_s * 1000:.3f}",
    )


def summary(tiles: SetTiles, unreachable: Mapping[str, list[str]] | None = None) -> str:
    """One line about the set as a whole; ``unreachable``: site -> its nodes cut off."""
    cameras = len(tiles.tiles)
    parts = [f"{cameras - tiles.missing}/{cameras} cameras"]
    if tiles.missing:
        parts.append(f"{tiles.missing} missing")
    parts += [
        f"site {site} cut off (its bridge was down): {', '.join(nodes)} not triggered"
        for site, nodes in (unreachable or {}).items()
    ]
    parts.append(
        f"{tiles.outliers} outside ±{tiles.tolerance_s * 1000:g} ms of the median"
        if tiles.outliers
        else f"all within ±{tiles.tolerance_s * 1000:g} ms of the median"
    )
    return " · ".join(parts)


@router.get("/sets/{capture_id}", response_class=HTMLResponse)
def set_view(capture_id: CaptureIdPath, controller: ControllerDep) -> HTMLResponse:
    """The set view: one tile per camera, with its frame-time offset from the set's median."""
    detail = controller.ledger.get_set(capture_id)
    if detail is None:
        raise unknown_capture(capture_id)
    api = capture_detail(detail)
    cameras = {}
    for node_id in {r.node_id for r in api.results}:
        view = controller.node(node_id)
        if view is not None and view.status is not None:
            cameras[node_id] = [c.index for c in view.status.cameras]
    tiles = set_tiles(api, cameras, controller.config.fire_tolerance_s)
    return HTMLResponse(
        render(
            "set_view.html",
            version=static_version(),
            capture_id=api.capture_id,
            state=api.state,
            when=when(api.triggered_at),
            median=when(tiles.median_ts),
            summary=summary(tiles, api.unreachable),
            tiles=join([tile(t) for t in tiles.tiles]),
            zip_url=api.zip_url,
        ),
        headers=NO_CACHE,
    )
