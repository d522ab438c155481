"""``/api/settings``: camera settings for the fleet or one node, and the lock-exposure action."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.controller.camera_settings import LockError
from pepi_fleet.controller.presence import NodeState
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.routes_deps import ERRORS, ControllerDep, NodeIdPath
from pepi_fleet.schemas.capture import describe_validation_error
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.exposure import DEFAULT_SETTLE_S, MAX_SETTLE_S
from pepi_fleet.schemas.status import NodeSettings

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["settings"], responses=ERRORS)

MAX_BODY_BYTES = 4096
SETTINGS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": NodeSettings.model_json_schema()}},
    }
}
"""The body is read as JSON and validated as the MQTT payload is (strict: true is not 1)."""


class FleetSettingsOut(BaseModel):
    """The settings every node gets: what the broker retains on ``<root>/settings``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fleet: NodeSettings


class NodeSettingsOut(BaseModel):
    """What was sent to one node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    sent: NodeSettings


class LockRequest(BaseModel):
    """Which camera to meter; absent: the first online node (by id), camera 0."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}(:[0-9]{1,2})?$",
        description="NODE or NODE:CAMERA",
    )
    settle_s: float = Field(
        default=DEFAULT_SETTLE_S,
        ge=0,
        le=MAX_SETTLE_S,
        description="seconds the reference's auto exposure gets to settle",
    )


class LockOut(BaseModel):
    """The reference metered and the fleet settings it locked every camera to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str
    fleet: NodeSettings


async def _settings_body(request: Request) -> NodeSettings:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"settings are at most {MAX_BODY_BYTES} bytes of JSON")
    try:
        return NodeSettings.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise HTTPException(422, describe_validation_error(exc)) from exc


def _connected(controller: Controller) -> None:
    if not controller.broker_connected:
        raise HTTPException(
            503,
            "the controller is not connected to the MQTT broker, so nothing was sent: "
            "check that the broker is running and reachable",
        )


@router.get("/settings", summary="Fleet camera settings", response_model_exclude_none=True)
def get_fleet_settings(controller: ControllerDep) -> FleetSettingsOut:
    """The settings every node gets (the applied values are in each node's cameras)."""
    return FleetSettingsOut(fleet=controller.camera_settings.fleet())


@router.put(
    "/settings",
    summary="Change fleet camera settings",
    openapi_extra=SETTINGS_BODY,
    response_model_exclude_none=True,
)
async def put_fleet_settings(request: Request, controller: ControllerDep) -> FleetSettingsOut:
    """Merge the given fields into the fleet's settings and send the whole to every node.

    Retained on the broker: a node that starts later gets them too. Values out of range
    or inconsistent (``awb_mode`` with ``colour_gains``) are refused with 422.
    """
    change = await _settings_body(request)
    _connected(controller)
    return FleetSettingsOut(fleet=controller.set_camera_settings(change))


@router.post(
    "/settings/clear", summary="Forget the fleet camera settings", response_model_exclude_none=True
)
def clear_fleet_settings(controller: ControllerDep) -> FleetSettingsOut:
    """Clear the retained fleet settings: nodes keep what they have, new nodes get none."""
    _connected(controller)
    controller.clear_camera_settings()
    return FleetSettingsOut(fleet=controller.camera_settings.fleet())


@router.put(
    "/nodes/{node_id}/settings",
    summary="Change one node's settings",
    openapi_extra=SETTINGS_BODY,
    response_model_exclude_none=True,
)
async def put_node_settings(
    node_id: NodeIdPath, request: Request, controller: ControllerDep
) -> NodeSettingsOut:
    """Send the given fields to one node (not retained: a restarted node gets the fleet's)."""
    change = await _settings_body(request)
    view = controller.node(node_id)
    if view is None:
        raise HTTPException(
            404, f"no node {node_id!r} is known to this controller: see GET /api/nodes"
        )
    if view.state is not NodeState.ONLINE:
        raise HTTPException(409, f"node {node_id} is {view.state}: it gets no settings now")
    _connected(controller)
    controller.set_camera_settings(change, node_id)
    return NodeSettingsOut(node_id=node_id, sent=change)


@router.post(
    "/settings/lock",
    summary="Lock every camera's exposure to a reference camera",
    responses={409: {"description": "No reference online, or it could not meter"}},
    response_model_exclude_none=True,
)
def lock_exposure(
    controller: ControllerDep, request: Annotated[LockRequest | None, Body()] = None
) -> LockOut:
    """The reference settles auto exposure and white balance; its exposure time, gain and
    colour gains become fixed fleet settings. Takes ``settle_s`` plus the node's answer."""
    request = request or LockRequest()
    _connected(controller)
    try:
        reference, fleet = controller.lock_exposure(request.reference, request.settle_s)
    except (LockError, PayloadError) as exc:
        raise HTTPException(409, str(exc)) from exc
    return LockOut(reference=str(reference), fleet=fleet)
