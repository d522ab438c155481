"""The one capture path (MQTT and Thrift): accept, schedule, fire, encode, store, report."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pepi_fleet.node.camera.base import Camera, CapturedFrame
from pepi_fleet.node.encode import encode_frame
from pepi_fleet.node.preview import thumbnail_jpeg
from pepi_fleet.node.store import CaptureStore, DuplicateCapture, StoredCapture, StoreFull
from pepi_fleet.node.taken_ids import TakenIds
from pepi_fleet.node.timing import SPIN_BEFORE_S, Fire, Late, decide, still_on_time
from pepi_fleet.node.worker import Progress, Worker
from pepi_fleet.schemas.capture import (
    DEFAULT_SCHEDULE_HORIZON_S,
    CaptureCommand,
    CaptureResult,
    CaptureStatus,
    Frame,
    auto_capture_id,
)
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

MAX_IDLE_WAIT_S = 1.0
"""The capture thread wakes at least this often (a sign of life, and no overlong waits)."""


@dataclass(frozen=True)
class CaptureRequest:
    """A validated command plus how and when it arrived."""

    command: CaptureCommand
    received_at: float
    source: str = "mqtt"
    expires_at: float | None = None
    retained: bool = False
    recapture: bool = False
    """Thrift semantics: a held id is captured again and the old capture kept aside."""
    expiry_s: float | None = None
    """MQTT 5 message expiry left on receipt (s), recorded in the result."""
    token: bool = False
    """The command was a plain-text id (what a button that repeats its text sends)."""


@dataclass(order=True)
class _Armed:
    fire_at: float
    seq: int
    request: CaptureRequest = field(compare=False)
    capture_id: str = field(compare=False)


@dataclass(frozen=True)
class CaptureSettings:
    """Knobs of the capture path."""

    late_tolerance_s: float = 0.5
    max_armed: int = 64
    jpeg_quality: int = 90
    horizon_s: float = DEFAULT_SCHEDULE_HORIZON_S
    """An ``at`` further ahead is refused (error)."""


class CaptureService:
    """Owns the camera thread. ``submit`` may be called from any thread and never blocks."""

    def __init__(
        self,
        node_id: str,
        camera: Camera,
        store: CaptureStore,
        publish_result: Callable[[CaptureResult], None],
        publish_preview: Callable[[bytes], None] | None = None,
        settings: CaptureSettings | None = None,
        clock: Clock = time.time,
        taken: TakenIds | None = None,
    ) -> None:
        self.node_id = node_id
        self.camera = camera
        self.store = store
        self.settings = settings or CaptureSettings()
        self.taken = taken if taken is not None else TakenIds(None, clock=clock)
        self._publish_result = publish_result
        self._publish_preview = publish_preview
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: list[_Armed] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.firing = Progress()
        """The capture thread's current shot (the watchdog's view of it)."""
        # One worker keeps results in order and the camera thread free for the next shot.
        self.encoder = Worker("encode")

    def start(self) -> None:
        self.encoder.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The capture thread runs (from ``start`` until ``stop``)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop firing; armed captures are dropped (and reported), encodes in flight finish."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self.encoder.stop(timeout=60):
            logger.error("encoder still busy after 60 s; stopping without it")

    def set_jpeg_quality(self, quality: int) -> None:
        self.settings = dataclasses.replace(self.settings, jpeg_quality=quality)

    def submit(self, request: CaptureRequest) -> None:
        """Accept (or refuse) a request at once and arm it for the capture thread.

        Reserving the id here, not later on the capture thread, means a retrieve that
        follows a Thrift ``start_capture`` on the same connection always finds it pending."""
        with self._cond:
            try:
                self._accept(request)
            except Exception as exc:
                logger.exception("capture command (%s) could not be accepted", request.source)
                capture_id = request.command.capture_id or auto_capture_id(request.received_at)
                self.store.abandon(capture_id)
                self._report_failure(request, capture_id, _internal(exc), CaptureStatus.ERROR)
            self._cond.notify_all()

    # -- capture thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                try:
                    item = self._next_due()
                except Exception as exc:
                    self._drop_head(exc)
                    continue
                if item is None:
                    break
            self._fire_guarded(item)
        with self._cond:
            leftovers = list(self._armed)
            self._armed.clear()
        for item in leftovers:
            self.store.abandon(item.capture_id)
            self._report_failure(
                item.request, item.capture_id, "agent stopping", CaptureStatus.ERROR
            )

    def _next_due(self) -> _Armed | None:
        """Under the lock: wait for the next armed capture to be due."""
        while not self._stopping:
            if not self._armed:
                self._cond.wait()
                continue
            wait = self._armed[0].fire_at - self._clock() - SPIN_BEFORE_S
            if wait > 0:
                self._cond.wait(min(wait, MAX_IDLE_WAIT_S))
                continue
            item = heapq.heappop(self._armed)
            return item
        return None

    def _drop_head(self, exc: Exception) -> None:
        """Under the lock: the next armed capture broke the scheduler; it alone is lost."""
        logger.exception("capture scheduler failed")
        if self._armed:
            item = heapq.heappop(self._armed)
            self.store.abandon(item.capture_id)
            self._report_failure(item.request, item.capture_id, _internal(exc), CaptureStatus.ERROR)

    def _accept(self, request: CaptureRequest) -> None:
        now = self._clock()
        capture_id = request.command.capture_id or auto_capture_id(request.received_at)
        decision = decide(
            at=request.command.at,
            received_at=request.received_at,
            now=now,
            late_tolerance_s=self.settings.late_tolerance_s,
            expires_at=request.expires_at,
            retained=request.retained,
            horizon_s=self.settings.horizon_s,
        )
        if not isinstance(decision, Fire):
            status = CaptureStatus.LATE if isinstance(decision, Late) else CaptureStatus.ERROR
            self._report_failure(request, capture_id, decision.reason, status)
            return
        if len(self._armed) >= self.settings.max_armed:
            self._report_failure(
                request,
                capture_id,
                f"{len(self._armed)} captures already armed; wait for them to fire",
                CaptureStatus.BUSY,
            )
            return
        try:
            self.store.reserve(capture_id, rename_held=request.recapture)
        except DuplicateCapture as exc:
            self._report_failure(request, capture_id, str(exc), CaptureStatus.DUPLICATE)
            return
        # Held ids were refused just now; this remembers those taken and since released.
        taken = None if request.recapture else self.taken.taken_at(capture_id)
        if taken is not None:
            self.store.abandon(capture_id)
            reason = f"capture {capture_id} was already taken by this node at {_utc(taken)}"
            self._report_failure(request, capture_id, reason, CaptureStatus.DUPLICATE)
            return
        try:
            self.store.check_space()
        except StoreFull as exc:
            self.store.abandon(capture_id)
            self._report_failure(request, capture_id, str(exc), CaptureStatus.STORE_FULL)
            return
        heapq.heappush(self._armed, _Armed(decision.fire_at, next(self._seq), request, capture_id))

    def _fire_guarded(self, item: _Armed) -> None:
        """``_fire``; whatever goes wrong in it is an ``error`` result, not the thread's end."""
        self.firing.begin()
        try:
            self._fire(item)
        except Exception as exc:
            logger.exception("capture %s failed on the capture thread", item.capture_id)
            self.store.abandon(item.capture_id)
            self._report_failure(item.request, item.capture_id, _internal(exc), CaptureStatus.ERROR)
        finally:
            self.firing.end()

    def _fire(self, item: _Armed) -> None:
        _spin_until(item.fire_at, self._clock)
        request = item.request
        fired_at = self._clock()
        late = still_on_time(
            at=request.command.at,
            now=fired_at,
            late_tolerance_s=self.settings.late_tolerance_s,
            expires_at=request.expires_at,
        )
        if late is not None:
            self.store.abandon(item.capture_id)
            self._report_failure(request, item.capture_id, late.reason, CaptureStatus.LATE)
            return
        cameras = request.command.cameras or [info.index for info in self.camera.infos()]
        try:
            frames = self.camera.capture(cameras, item.capture_id, request.command.at)
        except PepiError as exc:
            self.store.abandon(item.capture_id)
            self._report_failure(request, item.capture_id, f"camera: {exc}", CaptureStatus.ERROR)
            return
        if not self.encoder.submit(self._finish, item, fired_at, frames, what="encode"):
            self.store.abandon(item.capture_id)
            self._report_failure(request, item.capture_id, "agent stopping", CaptureStatus.ERROR)

    # -- encode thread --------------------------------------------------------------------------

    def _finish(self, item: _Armed, fired_at: float, frames: list[CapturedFrame]) -> None:
        try:
            self._store_frames(item, fired_at, frames)
        except Exception as exc:
            logger.exception("capture %s failed while encoding", item.capture_id)
            self.store.abandon(item.capture_id)
            self._report_failure(item.request, item.capture_id, _internal(exc), CaptureStatus.ERROR)

    def _store_frames(self, item: _Armed, fired_at: float, frames: list[CapturedFrame]) -> None:
        request, capture_id = item.request, item.capture_id
        fmt = request.command.format
        try:
            images: dict[int, bytes] = {}
            stored_frames: list[Frame] = []
            for frame in frames:
                encoded = encode_frame(
                    frame,
                    fmt,
                    node_id=self.node_id,
                    capture_id=capture_id,
                    jpeg_quality=self.settings.jpeg_quality,
                )
                images[frame.camera] = encoded.data
                stored_frames.append(
                    Frame(
                        camera=frame.camera,
                        timestamp=frame.timestamp,
                        width=encoded.width,
                        height=encoded.height,
                        format=fmt,
                        bytes=len(encoded.data),
                        sha256=encoded.sha256,
                        in_sync=frame.in_sync,
                        controls=frame.controls,
                    )
                )
            capture = StoredCapture(
                capture_id=capture_id,
                source=request.source,
                received_at=request.received_at,
                fired_at=fired_at,
                at=request.command.at,
                frames=stored_frames,
            )
            self.store.commit(capture, images)
            self.taken.add(capture_id)
        except StoreFull as exc:
            self._report_failure(request, capture_id, str(exc), CaptureStatus.STORE_FULL)
            return
        except (PepiError, OSError, ValueError) as exc:
            logger.exception("capture %s failed while storing", capture_id)
            self.store.abandon(capture_id)
            self._report_failure(request, capture_id, f"store: {exc}", CaptureStatus.ERROR)
            return
        self._publish_result(
            _result(
                self.node_id,
                request,
                capture_id,
                CaptureStatus.OK,
                fired_at=fired_at,
                frames=stored_frames,
            )
        )
        if self._publish_preview is not None and frames:
            try:
                self._publish_preview(thumbnail_jpeg(frames[0]))
            except Exception:
                logger.exception("preview of capture %s not published", capture_id)

    def _report_failure(
        self, request: CaptureRequest, capture_id: str, reason: str, status: CaptureStatus
    ) -> None:
        if status is CaptureStatus.DUPLICATE and request.source != "thrift":
            reason += _duplicate_hint(request)
        logger.warning("capture %s (%s): %s: %s", capture_id, request.source, status, reason)
        try:
            self._publish_result(_result(self.node_id, request, capture_id, status, error=reason))
        except Exception:
            logger.exception("result of capture %s not published", capture_id)


def _result(
    node_id: str,
    request: CaptureRequest,
    capture_id: str,
    status: CaptureStatus,
    *,
    fired_at: float | None = None,
    frames: list[Frame] | None = None,
    error: str | None = None,
) -> CaptureResult:
    return CaptureResult(
        node_id=node_id,
        capture_id=capture_id,
        status=status,
        received_at=request.received_at,
        fired_at=fired_at,
        at=request.command.at,
        frames=frames or [],
        error=error,
        source=_source(request.source),
        expiry_remaining_s=request.expiry_s,
    )


def _duplicate_hint(request: CaptureRequest) -> str:
    if request.token:
        return (
            "; a trigger that repeats the same text (a Home Assistant button sends PRESS) "
            "is taken once only: send an empty payload for an automatic id, or a new id "
            "for each capture"
        )
    return "; send a new capture_id, or an empty payload (or {}) for an automatic id"


def _internal(exc: Exception) -> str:
    return f"internal error: {type(exc).__name__}: {exc}"[:300] + " (see the node's log)"


def _utc(stamp: float) -> str:
    try:
        return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{stamp:.0f}"


def _source(value: str) -> Literal["mqtt", "thrift"]:
    return "thrift" if value == "thrift" else "mqtt"


def _spin_until(deadline: float, clock: Clock) -> None:
    """Sleep to just before ``deadline``, then spin the last stretch, yielding the core.

    ``time.sleep`` alone wakes 0.1-0.3 ms late (timer slack, wake-up latency); a spin
    hits the deadline within microseconds. Each turn of the spin yields, so where nodes
    share cores (a test bench, a Pi running other work) an armed node does not starve the
    others, and on an idle core the yield returns at once."""
    remaining = deadline - clock()
    if remaining > SPIN_BEFORE_S:
        time.sleep(remaining - SPIN_BEFORE_S)
    while clock() < deadline:
        os.sched_yield()
