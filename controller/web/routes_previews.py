"""``/api/previews``: the nodes' live previews through the controller's relay (one port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Path, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from pepi_fleet.controller.access import Principal
from pepi_fleet.controller.preview_relay import (
    PreviewRelay,
    PreviewUnknown,
    Viewer,
    preview_key,
)
from pepi_fleet.controller.web.preview_wire import (
    RelayStatsOut,
    SourceOut,
    ViewerOut,
    encode_frame,
    error_message,
    parse_watch,
    stats_message,
)
from pepi_fleet.controller.web.routes_deps import ERRORS, NodeIdPath
from pepi_fleet.core.mjpeg import CONTENT_TYPE, TIMESTAMP_HEADER, encode_part
from pepi_fleet.schemas.errors import PayloadError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/previews", tags=["previews"], responses=ERRORS)

SNAPSHOT_WAIT_S = 2.0
STATS_EVERY_S = 2.0
POLL_S = 0.5
"""How often an idle stream looks whether its viewer left or the server is stopping."""
CameraPath = Annotated[int, Path(ge=0, le=999, description="camera index on the node")]


def relay_of(app: Any) -> PreviewRelay:
    """The app's preview relay."""
    return cast(PreviewRelay, app.state.relay)


def _user(principal: object) -> str | None:
    return principal.name or None if isinstance(principal, Principal) else None


def _checked_key(relay: PreviewRelay, node_id: str, camera: int) -> str:
    key = preview_key(node_id, camera)
    try:
        relay.check(key)
    except PreviewUnknown as exc:
        raise HTTPException(404, str(exc)) from exc
    return key


@router.get("/stats", summary="Preview relay statistics")
async def relay_stats(request: Request) -> RelayStatsOut:
    """Every camera the relay pulls (viewers, frames and bytes in, upstream state) and every
    viewer with the frames it missed per camera."""
    relay = relay_of(request.app)
    return RelayStatsOut(
        sources=[SourceOut.model_validate(s) for s in relay.sources()],
        viewers=[ViewerOut.model_validate(v) for v in relay.viewers()],
    )


@router.get(
    "/{node_id}/{camera}.mjpg",
    summary="Live preview (MJPEG)",
    response_class=StreamingResponse,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "MJPEG stream"}},
)
async def preview_stream(
    request: Request, node_id: NodeIdPath, camera: CameraPath
) -> StreamingResponse:
    """The camera's preview as ``multipart/x-mixed-replace`` (the node's own framing),
    pulled once by the controller however many watch; a slow client misses frames
    instead of delaying anyone."""
    relay = relay_of(request.app)
    key = _checked_key(relay, node_id, camera)
    stopping: threading.Event = request.app.state.stopping
    user = _user(getattr(request.state, "principal", None))
    return StreamingResponse(
        _mjpeg(relay, key, user, stopping),
        media_type=CONTENT_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _mjpeg(
    relay: PreviewRelay, key: str, user: str | None, stopping: threading.Event
) -> AsyncIterator[bytes]:
    # Joins here, not in the route: the viewer exists only while the body is being sent, and
    # Starlette cancels the body when the client disconnects, which runs the finally.
    viewer = relay.join("mjpeg", user)
    try:
        relay.watch(viewer, [key])
        while not stopping.is_set():
            if await viewer.wait(POLL_S):
                for frame in viewer.take():
                    yield encode_part(frame.jpeg, frame.timestamp)
    finally:
        relay.leave(viewer)


@router.get(
    "/{node_id}/{camera}.jpg",
    summary="Newest preview frame",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "JPEG"},
        504: {"description": "No frame from the node in time"},
    },
)
async def preview_snapshot(request: Request, node_id: NodeIdPath, camera: CameraPath) -> Response:
    """The camera's newest preview frame; starts pulling its stream if nobody watches it
    and waits up to 2 s for a frame (504 if none came)."""
    relay = relay_of(request.app)
    key = _checked_key(relay, node_id, camera)
    frame = await relay.snapshot(key, SNAPSHOT_WAIT_S)
    if frame is None:
        why = next((s.error for s in relay.sources() if s.key == key and s.error), None)
        raise HTTPException(
            504,
            f"no preview from {key} within {SNAPSHOT_WAIT_S:g} s"
            + (f": {why}" if why else ": try again"),
        )
    headers = {"Cache-Control": "no-store"}
    if frame.timestamp is not None:
        headers[TIMESTAMP_HEADER] = f"{frame.timestamp:.6f}"
    return Response(frame.jpeg, media_type="image/jpeg", headers=headers)


@router.websocket("/ws", name="previews_ws")
async def previews_ws(ws: WebSocket) -> None:
    """One connection per browser for any number of previews (see ``preview_wire``)."""
    relay = relay_of(ws.app)
    stopping: threading.Event = ws.app.state.stopping
    max_watch: int = ws.app.state.preview_max_watch
    await ws.accept()
    viewer = relay.join("ws", _user(ws.scope.get("state", {}).get("principal")))
    outbox: deque[str] = deque()
    tasks = {
        asyncio.create_task(_receive(ws, relay, viewer, outbox, max_watch)),
        asyncio.create_task(_send(ws, viewer, outbox, stopping)),
    }
    try:
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        relay.leave(viewer)
        if ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # already gone
                await ws.close(1001 if stopping.is_set() else 1000)


async def _receive(
    ws: WebSocket, relay: PreviewRelay, viewer: Viewer, outbox: deque[str], max_watch: int
) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        try:
            if text is None:
                raise PayloadError('send text JSON {"watch": [...]}, not binary')
            keys = parse_watch(text, max_watch)
            known, unknown = _split_known(relay, keys)
        except PayloadError as exc:  # nothing changes: the previous set stays watched
            outbox.append(error_message(str(exc)))
            viewer.nudge()
            continue
        relay.watch(viewer, known)
        if unknown:
            outbox.append(error_message("not watched: " + "; ".join(unknown)))
        outbox.append(stats_message(viewer))
        viewer.nudge()


def _split_known(relay: PreviewRelay, keys: list[str]) -> tuple[list[str], list[str]]:
    """The keys of cameras that exist, and why each other one is not watched; PayloadError
    for a malformed key."""
    known, unknown = [], []
    for key in keys:
        try:
            relay.check(key)
        except PreviewUnknown as exc:
            unknown.append(str(exc))
        else:
            known.append(key)
    return known, unknown


async def _send(
    ws: WebSocket, viewer: Viewer, outbox: deque[str], stopping: threading.Event
) -> None:
    next_stats = time.monotonic() + STATS_EVERY_S
    try:
        while not stopping.is_set():
            await viewer.wait(max(0.0, min(POLL_S, next_stats - time.monotonic())))
            while outbox:
                await ws.send_text(outbox.popleft())
            for frame in viewer.take():
                await ws.send_bytes(encode_frame(frame, viewer.dropped.get(frame.key, 0)))
            if time.monotonic() >= next_stats:
                await ws.send_text(stats_message(viewer))
                next_stats = time.monotonic() + STATS_EVERY_S
    except (WebSocketDisconnect, RuntimeError, OSError):
        logger.debug("preview viewer %s left while being sent to", viewer.name)
