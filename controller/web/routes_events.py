"""``/api/events``: the controller's live events as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from pepi_fleet.controller.events import Event, EventHub
from pepi_fleet.controller.node_report import NodeOut
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.node_diffs import NodeDiffer, NodeFields
from pepi_fleet.controller.web.routes_deps import ControllerDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["events"])

POLL_S = 0.05
KEEPALIVE_S = 15.0
DIFF_EVERY_S = 0.5
ROUNDED = {"last_heartbeat_at": 3, "changed_at": 3, "clock_offset_s": 6, "clock_rtt_s": 6}
NODE_EVENTS = frozenset({"status", "presence"})
"""Hub events after which a node card may show something else."""
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

With ``?nodes=diff`` (the page's own stream), ``status`` is not sent; instead, at most every
0.5 s:

* ``nodes``: ``{changed: [{node_id, <changed fields of GET /api/nodes/{node_id}>}],
  removed: [node_id]}``; a node's first entry holds all its fields, later ones only what
  changed; the last heartbeat and clock offset alone, and camera readings that automatic
  exposure, white balance and focus move by themselves, go out at most every 15 s per node
  (a changed mode or value set by hand goes out at once).

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
async def events(
    request: Request,
    controller: ControllerDep,
    nodes: Annotated[
        Literal["status", "diff"],
        Query(description="status: every heartbeat; diff: coalesced node diffs (see above)"),
    ] = "status",
) -> StreamingResponse:
    """Presence changes, heartbeats, results and completed sets as they happen."""
    stopping: threading.Event = request.app.state.stopping
    differ = NodeDiffer() if nodes == "diff" else None
    stream = _stream(controller, stopping, differ)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    controller: Controller, stopping: threading.Event, differ: NodeDiffer | None
) -> AsyncIterator[str]:
    hub: EventHub = controller.events
    inbox = hub.subscribe()
    try:
        yield f"retry: {RETRY_MS}\n\n"
        hello = {"type": "hello", "broker_connected": controller.broker_connected}
        yield format_event("hello", hello)
        quiet_since = flushed = time.monotonic()
        while not stopping.is_set():
            try:
                event = inbox.get_nowait()
            except queue.Empty:
                event = None
            if event is not None:
                quiet_since = time.monotonic()
                if differ is None or event["type"] not in NODE_EVENTS:
                    yield format_event(str(event["type"]), event, event.get("seq"))
                    continue
                differ.mark(str(event["node_id"]))
                if event["type"] == "presence":  # kept: other pages may follow it
                    yield format_event("presence", event, event.get("seq"))
                continue
            if differ is not None and time.monotonic() - flushed >= DIFF_EVERY_S:
                flushed = time.monotonic()
                if differ.pending and (diff := _node_diff(controller, differ)) is not None:
                    yield format_event("nodes", diff)
                    quiet_since = time.monotonic()
            # The hub is thread-based; a short poll keeps this off the thread pool.
            await asyncio.sleep(POLL_S)
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
    finally:
        hub.unsubscribe(inbox)


def _node_diff(controller: Controller, differ: NodeDiffer) -> Event | None:
    """A ``nodes`` event of what changed since the last one this viewer got, or None."""
    now = time.time()

    def lookup(node_id: str) -> NodeFields | None:
        view = controller.node(node_id)
        if view is None:
            return None
        fields = NodeOut.of(view, now, controller.clock_of(node_id)).model_dump(mode="json")
        # to the millisecond and microsecond a card shows: fewer bytes, no change of noise
        for key, digits in ROUNDED.items():
            if fields.get(key) is not None:
                fields[key] = round(fields[key], digits)
        return fields

    changed, removed = differ.flush(lookup, now)
    if not changed and not removed:
        return None
    return {"type": "nodes", "time": now, "changed": changed, "removed": removed}
