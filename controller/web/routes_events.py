"""``/api/events``: the controller's live events as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from pepi_fleet.controller.events import EventHub
from pepi_fleet.controller.web.routes_deps import ControllerDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["events"])

POLL_S = 0.05
KEEPALIVE_S = 15.0
RETRY_MS = 2000

EVENTS_DOC = """Server-Sent Events, one per controller event; ``event:`` is its type:

* ``hello`` on connect: ``{broker_connected}``
* ``presence``: ``{node_id, old, state}`` (online, stale, offline, unreachable, removed)
* ``status``: ``{node_id, status}`` (each heartbeat)
* ``set_opened``: ``{capture_id, expected, at}``
* ``result``: ``{node_id, capture_id, status, error, frames}``
* ``set_complete``: ``{summary}`` (the CaptureSetSummary published on MQTT)
* ``broker``: ``{connected, reason}``
* ``settings``: ``{fleet}`` (the fleet's camera settings after a change, a lock or a clear)

``data:`` is JSON with ``type``, ``seq`` and ``time`` added. A comment line is sent
every 15 s to keep proxies from closing the stream."""


def format_event(kind: str, data: dict[str, Any], seq: int | None = None) -> str:
    """One SSE frame."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get(
    "/events",
    summary="Live event stream",
    description=EVENTS_DOC,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Event stream"}},
)
async def events(request: Request, controller: ControllerDep) -> StreamingResponse:
    """Presence changes, heartbeats, results and completed sets as they happen."""
    stopping: threading.Event = request.app.state.stopping
    stream = _stream(controller.events, stopping, controller.broker_connected)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    hub: EventHub, stopping: threading.Event, broker_connected: bool
) -> AsyncIterator[str]:
    inbox = hub.subscribe()
    try:
        yield f"retry: {RETRY_MS}\n\n"
        yield format_event("hello", {"type": "hello", "broker_connected": broker_connected})
        quiet_since = time.monotonic()
        while not stopping.is_set():
            try:
                event = inbox.get_nowait()
            except queue.Empty:
                # The hub is thread-based; a short poll keeps this off the thread pool.
                await asyncio.sleep(POLL_S)
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            quiet_since = time.monotonic()
            yield format_event(str(event["type"]), event, event.get("seq"))
    finally:
        hub.unsubscribe(inbox)
