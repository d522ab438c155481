"""``/api/nodes``: presence, address, cameras, store and clock of every node."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, HTTPException

from pepi_fleet.controller.node_report import FleetOut, NodeOut
from pepi_fleet.controller.web.routes_deps import ERRORS, ControllerDep, NodeIdPath

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["nodes"], responses=ERRORS)


@router.get("/nodes", summary="List nodes")
def list_nodes(controller: ControllerDep) -> FleetOut:
    """Every node the controller knows, sorted by id, with the broker link state and each
    bridged site's bridge state."""
    return FleetOut.of(
        controller.nodes(),
        controller.broker_connected,
        time.time(),
        controller.clock_of,
        controller.bridges(),
    )


@router.get("/nodes/{node_id}", summary="One node")
def get_node(node_id: NodeIdPath, controller: ControllerDep) -> NodeOut:
    """One node's state, address, cameras, store and clock."""
    view = controller.node(node_id)
    if view is None:
        raise HTTPException(
            404, f"no node {node_id!r} is known to this controller: see GET /api/nodes"
        )
    return NodeOut.of(view, time.time(), controller.clock_of(node_id))
