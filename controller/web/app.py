"""The FastAPI application: REST API under ``/api``, the page at ``/``, static files."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pepi_fleet.controller.preview_relay import PreviewRelay
from pepi_fleet.controller.preview_streams import stream_url
from pepi_fleet.controller.preview_upstream import pull_mjpeg
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web import (
    routes_auth,
    routes_captures,
    routes_events,
    routes_export,
    routes_files,
    routes_nodes,
    routes_page,
    routes_previews,
    routes_set_view,
    routes_settings,
)
from pepi_fleet.controller.web.guard import default_allowed_hosts
from pepi_fleet.controller.web.security import SecurityMiddleware, WebAccess
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

DESCRIPTION = """REST API of a pepi-fleet controller: nodes and their presence, capture
triggers, capture sets with per-node results and spread, image and zip downloads, and a
live event stream. Errors are ``{"detail": "<one line>"}``.

Off loopback a login is required: a session cookie from ``POST /api/login``, or an API
token (``pepi controller token add``) as ``Authorization: Bearer <token>``. Viewers may
read; operators may also capture. Every request that changes something must send a JSON
body with ``Content-Type: application/json``."""

ID_RULES = {
    "node_id": "a node id is 1-32 of a-z 0-9 _ - starting with a letter or digit",
    "capture_id": "a capture id is 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit",
    "name": "a file name is 1-200 of A-Z a-z 0-9 . _ - starting with a letter or digit",
}


def _version() -> str:
    try:
        return metadata.version("pepi-fleet")
    except metadata.PackageNotFoundError:
        return "0"


def create_app(controller: Controller, access: WebAccess | None = None) -> FastAPI:
    """The web app on ``controller``, admitting requests as ``access`` says (default: no
    login, loopback names only); ``app.state.stopping`` ends live streams on shutdown."""
    access = access or WebAccess(
        login_required=False, allowed_hosts=default_allowed_hosts("127.0.0.1")
    )
    app = FastAPI(
        title="pepi-fleet controller",
        version=_version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; rigs are often offline
        redoc_url=None,
    )
    app.state.controller = controller
    app.state.access = access
    app.state.stopping = threading.Event()
    app.state.relay = PreviewRelay(
        lambda node_id, camera: stream_url(node_id, camera, controller.node(node_id)),
        pull_mjpeg,
        linger_s=controller.config.preview_linger_s,
    )
    app.state.preview_max_watch = controller.config.preview_max_watch
    modules = (
        routes_nodes,
        routes_captures,
        routes_settings,
        routes_files,
        routes_events,
        routes_page,
        routes_auth,
        routes_set_view,
    )
    for module in modules:
        app.include_router(module.router)
    app.include_router(routes_export.router)
    app.include_router(routes_previews.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PepiError, _pepi_error)
    app.add_middleware(SecurityMiddleware, access=access)
    return app


def describe_request_errors(errors: Sequence[Any]) -> str:
    """One line naming each bad part of a request and why."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = ".".join(loc) or "request"
        msg = str(err.get("msg", "invalid"))
        kind = err.get("type")
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] in ID_RULES:
            msg = f"invalid {loc[-1]}: {ID_RULES[loc[-1]]}"
        elif kind in ("model_attributes_type", "dict_type") and loc == ["body"]:
            msg = "send a JSON object with Content-Type: application/json"
        elif kind == "json_invalid":
            msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', msg)})"
            where = "body"
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": describe_request_errors(exc.errors())}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, detail = exc.status_code, str(exc.detail)
    segments = request.url.path.split("/")
    if status == 404 and any(s in ("..", ".") for s in segments):
        # Reached only with percent-encoded dot segments: a traversal attempt, not a typo.
        status, detail = 400, "path segments '.' and '..' are not allowed"
    elif status == 404 and detail == "Not Found":
        detail = f"no such page or endpoint: {request.url.path} (see /openapi.json)"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)


async def _pepi_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)
