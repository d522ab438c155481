"""In-memory nodes behind the controller's NodeClient: re-captures, corrupt bytes, outages."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pepi_fleet.controller.node_client import (
    Endpoint,
    NodeUnreachable,
    NotHeld,
    ReceivedImage,
    RetrievalError,
    Sink,
)
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus, Frame

_serial = itertools.count(1)


@dataclass(frozen=True)
class _Held:
    result: CaptureResult
    images: dict[int, bytes]


class FakeNode:
    """One node's store in memory, served through the NodeClient calls.

    ``reachable = False`` makes every call fail as a dead node's would; a capture id in
    ``corrupt`` is served with one byte flipped (the node still reports the stored sha256);
    one in ``short`` breaks off halfway, as a connection that dies mid-transfer. An image is
    passed to the sink in pieces of ``piece`` bytes, as a socket delivers it.
    """

    def __init__(self, node_id: str, clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.reachable = True
        self.corrupt: set[str] = set()
        self.short: set[str] = set()
        self.piece = 1000
        self.released: list[str] = []
        self.fetches: list[str] = []
        self._clock = clock
        self._held: dict[str, _Held] = {}  # insertion order: oldest first, like the node's list
        self._lock = threading.Lock()
        self._serving = threading.Event()  # cleared: fetches wait (a slow node)
        self._serving.set()

    # -- what happens on the node --------------------------------------------------------------

    def capture(
        self, capture_id: str, *, cameras: int = 1, source: str = "mqtt", age_s: float = 0.0
    ) -> CaptureResult:
        """Take a capture (fired ``age_s`` ago); the ok result the node publishes for it."""
        fired_at = self._clock() - age_s
        images = {
            camera: f"{self.node_id}/{capture_id}/cam{camera}/#{next(_serial)}".encode() * 64
            for camera in range(cameras)
        }
        frames = [
            Frame(
                camera=camera,
                timestamp=fired_at,
                width=64,
                height=48,
                format="jpeg",
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
            for camera, data in images.items()
        ]
        result = CaptureResult(
            node_id=self.node_id,
            capture_id=capture_id,
            status=CaptureStatus.OK,
            received_at=fired_at,
            fired_at=fired_at,
            frames=frames,
            source="thrift" if source == "thrift" else "mqtt",
        )
        with self._lock:
            if capture_id in self._held:
                raise AssertionError(f"{capture_id} is held already: rename it aside first")
            self._held[capture_id] = _Held(result, images)
        return result

    def rename_aside(self, capture_id: str) -> str:
        """Keep a held capture under the next free ``<id>.rN`` (as before a re-capture)."""
        with self._lock:
            held = self._held.pop(capture_id)
            new_id = next(
                f"{capture_id}.r{n}"
                for n in itertools.count(1)
                if f"{capture_id}.r{n}" not in self._held
            )
            renamed = held.result.model_copy(update={"capture_id": new_id})
            self._held[new_id] = _Held(renamed, held.images)
            return new_id

    def recapture(self, capture_id: str) -> tuple[str, CaptureResult]:
        """A PEPI client re-used the code: the held capture goes aside, a new one takes the id."""
        aside = self.rename_aside(capture_id)
        return aside, self.capture(capture_id, source="thrift")

    def drop(self, capture_id: str) -> None:
        """The store's retention removed the capture."""
        with self._lock:
            del self._held[capture_id]

    def holds(self) -> dict[str, CaptureResult]:
        """Held capture id -> its result."""
        with self._lock:
            return {cid: held.result for cid, held in self._held.items()}

    def image(self, capture_id: str, camera: int = 0) -> bytes:
        """The bytes stored for one camera of a held capture."""
        with self._lock:
            return self._held[capture_id].images[camera]

    @contextlib.contextmanager
    def hold_fetches(self) -> Iterator[None]:
        """Image fetches wait until the block ends (a node slow to serve)."""
        self._serving.clear()
        try:
            yield
        finally:
            self._serving.set()

    # -- NodeClient ----------------------------------------------------------------------------

    def list_captures(self) -> list[CaptureResult]:
        self._reach()
        return list(self.holds().values())

    def get_capture(self, capture_id: str) -> CaptureResult | None:
        self._reach()
        return self.holds().get(capture_id)

    def receive_image(
        self, capture_id: str, camera: int, fmt: str, sink: Sink, max_bytes: int
    ) -> ReceivedImage:
        self._reach()
        with self._lock:
            self.fetches.append(capture_id)
            held = self._held.get(capture_id)
            if held is None or camera not in held.images:
                raise NotHeld(f"node no longer has it: no capture {capture_id} camera {camera}")
            data = held.images[camera]
            frame = next(f for f in held.result.frames if f.camera == camera)
            if capture_id in self.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            short = capture_id in self.short
        if not self._serving.wait(timeout=30):  # asked for (in ``fetches``), not served yet
            raise NodeUnreachable(f"node {self.node_id} held its fetches for 30 s")
        if len(data) > max_bytes:
            raise RetrievalError(f"node announces {len(data)} bytes, at most {max_bytes} wanted")
        digest = hashlib.sha256()
        view = memoryview(data)
        for at in range(0, len(data), self.piece):
            if short and at >= len(data) // 2:
                raise NodeUnreachable(f"node closed the stream after {at} of {len(data)} bytes")
            digest.update(view[at : at + self.piece])
            sink(view[at : at + self.piece])
        return ReceivedImage(len(data), digest.hexdigest(), frame.sha256, frame)

    def release(self, capture_id: str) -> bool:
        self._reach()
        with self._lock:
            if self._held.pop(capture_id, None) is None:
                return False
            self.released.append(capture_id)
            return True

    def release_matching(self, capture_id: str, expected: dict[int, str]) -> str | None:
        self._reach()
        with self._lock:
            held = self._held.get(capture_id)
            target = None
            if held is not None and {f.camera: f.sha256 for f in held.result.frames} == expected:
                target = capture_id
            elif expected:
                camera, sha256 = next(iter(expected.items()))
                target = next(
                    (
                        cid
                        for cid, h in self._held.items()
                        if any(f.camera == camera and f.sha256 == sha256 for f in h.result.frames)
                    ),
                    None,
                )
            if target is None:
                return None
            del self._held[target]
            self.released.append(target)
            return target

    def close(self) -> None:
        pass

    def _reach(self) -> None:
        if not self.reachable:
            raise NodeUnreachable(f"cannot reach node {self.node_id}: connection refused")


class FakeFleet:
    """Fake nodes by id: the ``endpoint_of`` and the NodeClient factory a Downloader takes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.nodes: dict[str, FakeNode] = {}
        self.offline: set[str] = set()

    def add(self, node_id: str) -> FakeNode:
        node = self.nodes[node_id] = FakeNode(node_id, self._clock)
        return node

    def endpoint_of(self, node_id: str) -> Endpoint | None:
        """Where the node serves, or None while it is offline (as presence would say)."""
        if node_id not in self.nodes or node_id in self.offline:
            return None
        return ("fake", 6000)

    def client(self, node_id: str, endpoint: Endpoint) -> FakeNode:
        return self.nodes[node_id]
