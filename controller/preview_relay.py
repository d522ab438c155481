"""The preview relay: one upstream pull per watched camera, fanned out to every viewer.

Each viewer holds at most the newest frame per camera it watches: a frame that arrives
before the viewer took the previous one replaces it, and the replaced one counts as
dropped for that viewer. The pull never waits on a viewer, so a slow viewer slows neither
the node nor anyone else. A camera's pull starts with its first viewer and stops
``linger_s`` after its last one left. Everything runs on one asyncio loop (the web
server's), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pepi_fleet.controller.preview_upstream import UpstreamBusy, UpstreamError, UpstreamFrame
from pepi_fleet.core.mqtt_link import LogThrottle
from pepi_fleet.schemas.errors import PayloadError, PepiError

logger = logging.getLogger(__name__)

DEFAULT_LINGER_S = 5.0
"""How long a camera's pull outlives its last viewer (a page reload keeps the stream)."""
ERROR_LOG_INTERVAL_S = 60.0
_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,31})/(\d{1,3})$")

Puller = Callable[[str], AsyncIterator[UpstreamFrame]]
"""stream URL -> its frames (``preview_upstream.pull_mjpeg``)."""
Resolver = Callable[[str, int], str]
"""(node id, camera index) -> the camera's stream URL now; PreviewUnknown or
PreviewUnavailable when there is none."""


class PreviewUnknown(PepiError):
    """No such node or camera."""


class PreviewUnavailable(PepiError):
    """The camera exists but its stream cannot be reached now (node offline)."""


def preview_key(node_id: str, camera: int) -> str:
    """The key a camera's preview is known by: ``<node id>/<camera index>``."""
    return f"{node_id}/{camera}"


def parse_key(key: str) -> tuple[str, int]:
    """(node id, camera index) of a preview key; PayloadError if it is not one."""
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise PayloadError(
            f"invalid preview key {str(key)[:50]!r}: use '<node id>/<camera index>', e.g. 'cam01/0'"
        )
    return match.group(1), int(match.group(2))


class UpstreamState(StrEnum):
    """What a camera's pull is doing."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    """The stream failed or ended; it is tried again after a growing pause."""
    BUSY = "busy"
    """The node's MJPEG connection slots are full; tried again after its Retry-After."""
    UNAVAILABLE = "unavailable"
    """The node is offline or advertises no stream for the camera."""


@dataclass(frozen=True)
class PreviewFrame:
    """One relayed frame: ``seq`` counts the camera's frames since its pull started."""

    key: str
    seq: int
    jpeg: bytes
    timestamp: float | None


@dataclass(frozen=True)
class BackOff:
    """Pause before reconnect ``attempt`` (0, 1, …): doubling from ``base_s`` up to
    ``cap_s``, each scaled by a random 0.5-1 so many cameras do not retry in step."""

    base_s: float = 0.5
    cap_s: float = 15.0
    jitter: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt."""
        scale = 0.5 + float(self.jitter()) / 2
        return float(min(self.cap_s, self.base_s * 2.0 ** min(attempt, 30)) * scale)


class Viewer:
    """One viewer (a WebSocket, an MJPEG response, a snapshot): its newest-frame inbox."""

    def __init__(self, name: str, kind: str, user: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.user = user
        self.watching: frozenset[str] = frozenset()
        self.dropped: dict[str, int] = {}
        """Frames replaced before this viewer took them, per key (cumulative)."""
        self.taken = 0
        self._pending: dict[str, PreviewFrame] = {}
        self._wake = asyncio.Event()

    def offer(self, frame: PreviewFrame) -> None:
        """Queue ``frame``; an older frame of its key still waiting is dropped."""
        if frame.key in self._pending:
            self.dropped[frame.key] = self.dropped.get(frame.key, 0) + 1
        self._pending[frame.key] = frame
        self._wake.set()

    def take(self) -> list[PreviewFrame]:
        """Every waiting frame (at most one per key), oldest key first; the inbox is empty."""
        frames = list(self._pending.values())
        self._pending.clear()
        self._wake.clear()
        self.taken += len(frames)
        return frames

    def nudge(self) -> None:
        """Wake ``wait`` without a frame (the viewer has something else to send)."""
        self._wake.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until a frame waits (True) or ``timeout_s`` passed (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        return bool(self._pending)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._pending.pop(key, None)


@dataclass
class _Source:
    key: str
    node_id: str
    camera: int
    viewers: set[Viewer] = field(default_factory=set)
    frames_in: int = 0
    bytes_in: int = 0
    connects: int = 0
    state: UpstreamState = UpstreamState.CONNECTING
    error: str | None = None
    newest: PreviewFrame | None = None
    task: asyncio.Task[None] | None = None
    retire: asyncio.TimerHandle | None = None
    errors: LogThrottle = field(default_factory=lambda: LogThrottle(ERROR_LOG_INTERVAL_S))


@dataclass(frozen=True)
class SourceStats:
    key: str
    node_id: str
    camera: int
    viewers: int
    frames_in: int
    bytes_in: int
    connects: int
    upstream_state: UpstreamState
    error: str | None


@dataclass(frozen=True)
class ViewerStats:
    viewer: str
    kind: str
    user: str | None
    watching: list[str]
    taken: int
    dropped: dict[str, int]


class PreviewRelay:
    """Pulls each watched camera's stream once and hands its frames to every viewer."""

    def __init__(
        self,
        resolve: Resolver,
        pull: Puller,
        linger_s: float = DEFAULT_LINGER_S,
        backoff: BackOff | None = None,
    ) -> None:
        self._resolve = resolve
        self._pull = pull
        self.linger_s = linger_s
        self._backoff = backoff or BackOff()
        self._sources: dict[str, _Source] = {}
        self._viewers: dict[str, Viewer] = {}
        self._next_viewer = 0

    # -- viewers --------------------------------------------------------------------------------

    def join(self, kind: str, user: str | None = None) -> Viewer:
        """A new viewer, watching nothing yet."""
        self._next_viewer += 1
        viewer = Viewer(f"{kind}-{self._next_viewer}", kind, user)
        self._viewers[viewer.name] = viewer
        return viewer

    def leave(self, viewer: Viewer) -> None:
        """The viewer is gone: it watches nothing any more."""
        self.watch(viewer, ())
        self._viewers.pop(viewer.name, None)

    def check(self, key: str) -> None:
        """PayloadError for a malformed key, PreviewUnknown for no such camera."""
        node_id, camera = parse_key(key)
        with contextlib.suppress(PreviewUnavailable):
            self._resolve(node_id, camera)

    def watch(self, viewer: Viewer, keys: Iterable[str]) -> None:
        """Make ``viewer`` watch exactly ``keys`` (checked with ``check`` beforehand)."""
        wanted = frozenset(keys)
        for key in viewer.watching - wanted:
            source = self._sources.get(key)
            if source is not None:
                source.viewers.discard(viewer)
                if not source.viewers:
                    self._schedule_retire(source)
        viewer.forget(viewer.watching - wanted)
        for key in wanted - viewer.watching:
            source = self._sources.get(key) or self._start(key)
            source.viewers.add(viewer)
            if source.retire is not None:
                source.retire.cancel()
                source.retire = None
            if source.newest is not None and source.state is UpstreamState.STREAMING:
                viewer.offer(source.newest)  # something to show at once
        viewer.watching = wanted

    async def snapshot(self, key: str, timeout_s: float) -> PreviewFrame | None:
        """The camera's newest frame, pulling it if needed; None if none came in time."""
        source = self._sources.get(key)
        streaming = source is not None and source.state is UpstreamState.STREAMING
        if source is not None and streaming and source.newest is not None:
            return source.newest
        viewer = self.join("snapshot")
        try:
            self.watch(viewer, [key])
            if await viewer.wait(timeout_s):
                return viewer.take()[-1]
            return None
        finally:
            self.leave(viewer)

    # -- stats ----------------------------------------------------------------------------------

    def sources(self) -> list[SourceStats]:
        """Every camera being pulled (or lingering after its last viewer), by key."""
        return [
            SourceStats(
                s.key,
                s.node_id,
                s.camera,
                len(s.viewers),
                s.frames_in,
                s.bytes_in,
                s.connects,
                s.state,
                s.error,
            )
            for s in sorted(self._sources.values(), key=lambda s: s.key)
        ]

    def viewers(self) -> list[ViewerStats]:
        """Every connected viewer with its dropped-frame counts."""
        return [
            ViewerStats(
                v.name, v.kind, v.user, sorted(v.watching), v.taken, dict(sorted(v.dropped.items()))
            )
            for v in self._viewers.values()
        ]

    async def close(self) -> None:
        """Stop every pull (the server is stopping)."""
        tasks = [s.task for s in self._sources.values() if s.task is not None]
        for key in list(self._sources):
            self._retire(key, force=True)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- sources --------------------------------------------------------------------------------

    def _start(self, key: str) -> _Source:
        node_id, camera = parse_key(key)
        source = self._sources[key] = _Source(key, node_id, camera)
        source.task = asyncio.get_running_loop().create_task(
            self._run(source), name=f"preview {key}"
        )
        return source

    def _schedule_retire(self, source: _Source) -> None:
        loop = asyncio.get_running_loop()
        source.retire = loop.call_later(self.linger_s, self._retire, source.key)

    def _retire(self, key: str, force: bool = False) -> None:
        source = self._sources.get(key)
        if source is None or (source.viewers and not force):
            return
        del self._sources[key]
        if source.retire is not None:
            source.retire.cancel()
        if source.task is not None:
            source.task.cancel()
        logger.debug("preview %s: no viewer for %.1f s, pull stopped", key, self.linger_s)

    async def _run(self, source: _Source) -> None:
        attempt = 0
        while True:
            wait, state = None, UpstreamState.BACKOFF
            try:
                url = self._resolve(source.node_id, source.camera)
                source.state = UpstreamState.CONNECTING
                source.connects += 1
                async for frame in self._pull(url):
                    if source.state is not UpstreamState.STREAMING:
                        self._streaming(source)
                        attempt = 0
                    self._publish(source, frame)
                source.error = "the node ended the stream"
            except UpstreamBusy as exc:
                source.error, state = str(exc), UpstreamState.BUSY
                wait = max(exc.retry_after_s, self._backoff.delay(attempt))
            except (PreviewUnavailable, PreviewUnknown) as exc:
                source.error, state = str(exc), UpstreamState.UNAVAILABLE
            except UpstreamError as exc:
                source.error = str(exc)
            source.state = state
            wait = wait if wait is not None else self._backoff.delay(attempt)
            attempt += 1
            held = source.errors.allow()
            if held is not None:
                logger.warning(
                    "preview %s: %s; retrying in %.1f s%s",
                    source.key,
                    source.error,
                    wait,
                    f" ({held} more failures since the last report)" if held else "",
                )
            await asyncio.sleep(wait)

    def _streaming(self, source: _Source) -> None:
        if source.error is not None:
            logger.info("preview %s: streaming again", source.key)
        source.state, source.error = UpstreamState.STREAMING, None
        source.errors.reset()

    def _publish(self, source: _Source, upstream: UpstreamFrame) -> None:
        source.frames_in += 1
        source.bytes_in += len(upstream.jpeg)
        frame = PreviewFrame(source.key, source.frames_in, upstream.jpeg, upstream.timestamp)
        source.newest = frame
        for viewer in source.viewers:
            viewer.offer(frame)
