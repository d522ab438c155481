"""Shared route dependencies: the controller, validated path ids, documented error answers."""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Path, Request

from pepi_fleet.controller.access import OPEN, Principal
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.api_models import ApiError
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import CAPTURE_ID_PATTERN, NODE_ID_PATTERN, validate_capture_id

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ApiError, "description": text}
    for code, text in (
        (400, "Bad request"),
        (404, "Not found"),
        (422, "Invalid input"),
    )
}


def controller_of(request: Request) -> Controller:
    """The controller the app was built on."""
    return cast(Controller, request.app.state.controller)


def node_id_param(
    node_id: Annotated[str, Path(pattern=NODE_ID_PATTERN, max_length=32, description="a node id")],
) -> str:
    """A node id path parameter (the pattern makes FastAPI answer 422 for unsafe ones)."""
    return node_id


def capture_id_param(
    capture_id: Annotated[
        str, Path(pattern=CAPTURE_ID_PATTERN, max_length=64, description="a capture set id")
    ],
) -> str:
    """A capture id path parameter, checked by the same rule the nodes use."""
    try:
        return validate_capture_id(capture_id)
    except PayloadError as exc:
        raise HTTPException(422, str(exc)) from exc


def principal_of(request: Request) -> Principal | None:
    """Who sent the request, as the security middleware found (None: nobody logged in, on
    the few paths open to that)."""
    principal = getattr(request.state, "principal", OPEN)
    return principal if isinstance(principal, Principal) else None


ControllerDep = Annotated[Controller, Depends(controller_of)]
PrincipalDep = Annotated[Principal | None, Depends(principal_of)]
NodeIdPath = Annotated[str, Depends(node_id_param)]
CaptureIdPath = Annotated[str, Depends(capture_id_param)]


def unknown_capture(capture_id: str) -> HTTPException:
    """404 for a capture set the ledger does not hold."""
    return HTTPException(
        404, f"no capture set {capture_id!r}: list the known ones with GET /api/captures"
    )
