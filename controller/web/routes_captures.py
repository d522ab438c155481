"""``/api/captures``: trigger captures, list capture sets, one set with results and files."""

from __future__ import annotations

import logging
import time
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query

from pepi_fleet.controller.ledger import ImageState, SetDetail
from pepi_fleet.controller.presence import NodeState
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.api_models import (
    API,
    THUMBNAIL_FORMATS,
    ApiError,
    CaptureAccepted,
    CapturePage,
    CaptureRequest,
    CaptureSetDetail,
    CaptureSetOut,
    ControllerStatusOut,
    FileOut,
    NodeResultOut,
)
from pepi_fleet.controller.web.routes_deps import (
    ERRORS,
    CaptureIdPath,
    ControllerDep,
    unknown_capture,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["captures"], responses=ERRORS)

TRIGGER_ERRORS: dict[int | str, dict[str, object]] = {
    409: {"model": ApiError, "description": "Id already used, or no node can capture"},
    503: {"model": ApiError, "description": "The controller is not connected to the broker"},
}


@router.post("/captures", status_code=202, summary="Trigger a capture", responses=TRIGGER_ERRORS)
def trigger_capture(
    controller: ControllerDep,
    request: Annotated[CaptureRequest | None, Body()] = None,
) -> CaptureAccepted:
    """Capture on every online node (or one), now, at ``at`` or after ``delay`` seconds
    (``"auto"``: the adaptive lead of ``GET /api/status``, so every node arms in time).

    The capture set opens when the broker echoes the trigger; follow it at ``url``
    or on ``GET /api/events``. A scheduled capture answers ``clock_warnings`` before it
    fires: the nodes whose clock may be further from the controller's than ``tolerance_ms``.
    """
    request = request or CaptureRequest()
    if not controller.broker_connected:
        raise HTTPException(
            503,
            "the controller is not connected to the MQTT broker, so no trigger was sent: "
            "check that the broker is running and reachable",
        )
    if request.node_id is not None:
        view = controller.node(request.node_id)
        if view is None:
            raise HTTPException(
                404, f"no node {request.node_id!r} is known to this controller: see GET /api/nodes"
            )
        if view.state is not NodeState.ONLINE:
            raise HTTPException(
                409,
                f"node {request.node_id} is {view.state}: it cannot capture until it is "
                "back online (check its power and network)",
            )
    elif not any(v.state is NodeState.ONLINE for v in controller.nodes()):
        raise HTTPException(409, "no node is online: start or reconnect a node, then capture")
    if request.capture_id is not None and controller.ledger.get_set(request.capture_id):
        raise HTTPException(
            409, f"capture id {request.capture_id!r} is already used: choose another or omit it"
        )
    at = request.fire_at(time.time(), controller.trigger_lead().lead_s)
    warnings = [] if at is None else scheduled_warnings(controller, request)
    capture_id = controller.trigger(request.capture_id, at=at, node_id=request.node_id)
    logger.info("web: triggered %s on %s", capture_id, request.node_id or "all nodes")
    return CaptureAccepted(
        capture_id=capture_id,
        node_id=request.node_id,
        at=at,
        url=f"{API}/captures/{capture_id}",
        clock_warnings=warnings,
    )


@router.get("/status", summary="Broker link and the adaptive capture lead")
def get_status(controller: ControllerDep) -> ControllerStatusOut:
    """Whether the controller is on the broker, and how far ahead it schedules a capture
    given ``delay: "auto"``, from the nodes' measured trigger delivery latency."""
    estimate = controller.trigger_lead()
    return ControllerStatusOut(
        broker_connected=controller.broker_connected,
        trigger_lead_s=estimate.lead_s,
        trigger_latency_s=estimate.latency_s,
        latency_nodes=estimate.nodes_measured,
        slowest_node=estimate.slowest_node,
    )


def scheduled_warnings(controller: Controller, request: CaptureRequest) -> list[str]:
    """Clock warnings for the nodes a scheduled capture will expect: the targeted one, or
    every online node (what the set will expect when it opens)."""
    if request.node_id is not None:
        expected = [request.node_id]
    else:
        expected = [v.node_id for v in controller.nodes() if v.state is NodeState.ONLINE]
    return controller.clock_warnings(expected, request.tolerance_s)


@router.get("/captures", summary="List capture sets")
def list_captures(
    controller: ControllerDep,
    limit: Annotated[int, Query(ge=1, le=200, description="sets per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="sets to skip")] = 0,
) -> CapturePage:
    """Capture sets, newest trigger first."""
    records = controller.ledger.list_sets(limit + 1, offset)
    more = len(records) > limit
    return CapturePage(
        items=[CaptureSetOut.of(r) for r in records[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/captures/{capture_id}", summary="One capture set")
def get_capture(capture_id: CaptureIdPath, controller: ControllerDep) -> CaptureSetDetail:
    """One set: per-node results (null status = not answered), spread and files."""
    detail = controller.ledger.get_set(capture_id)
    if detail is None:
        raise unknown_capture(capture_id)
    return capture_detail(detail)


def capture_detail(detail: SetDetail) -> CaptureSetDetail:
    """The API view of a set; expected nodes without a result get status null."""
    record = detail.record
    results = {
        r.node_id: NodeResultOut(
            node_id=r.node_id,
            status=r.result.status,
            node_capture_id=r.node_capture_id,
            received_at=r.result.received_at,
            fired_at=r.result.fired_at,
            error=r.result.error,
            frames=list(r.result.frames),
            released=r.released_at is not None,
        )
        for r in detail.results
    }
    for node_id in record.expected:
        results.setdefault(node_id, NodeResultOut(node_id=node_id))
    base = f"{API}/captures/{record.set_id}/files"
    files = []
    for img in detail.images:
        name = PurePosixPath(img.path).name
        done = img.state is ImageState.DONE
        thumb = done and img.format in THUMBNAIL_FORMATS
        files.append(
            FileOut(
                name=name,
                node_id=img.node_id,
                camera=img.camera,
                format=img.format,
                bytes=img.size,
                sha256=img.sha256,
                timestamp=img.frame_ts,
                state=img.state,
                last_error=img.last_error,
                url=f"{base}/{name}" if done else None,
                thumbnail_url=f"{base}/{name}/thumbnail" if thumb else None,
            )
        )
    ordered = [results[n] for n in sorted(results)]
    return CaptureSetDetail.of(record, results=ordered, files=files)
