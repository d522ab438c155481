"""The controller's web page and REST API (FastAPI, served by uvicorn in a thread)."""

from __future__ import annotations

from pepi_fleet.controller.web.app import create_app
from pepi_fleet.controller.web.server import WebError, WebServer

__all__ = ["WebError", "WebServer", "create_app"]
