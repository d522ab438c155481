"""The node's capture store: atomic on-disk captures with metadata, bounded in size."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.core.atomic import fsync_dir, write_atomic, write_synced
from pepi_fleet.node.encode import convert_image
from pepi_fleet.schemas.capture import FILE_EXTENSIONS, Frame, ImageFormat
from pepi_fleet.schemas.errors import StoreError
from pepi_fleet.schemas.ids import is_capture_id, validate_capture_id
from pepi_fleet.schemas.status import StoreInfo

logger = logging.getLogger(__name__)

META_NAME = "meta.json"
RETRIEVED_NAME = "retrieved"
"""Present in a capture folder once a client fetched one of its images."""


class DuplicateCapture(StoreError):
    """The store already holds (or is taking) a capture with this id."""


class StoreFull(StoreError):
    """Taking this capture would exceed the byte limit or the free-disk reserve."""


class CaptureNotFound(StoreError):
    """No capture with this id is held."""


class StoredCapture(BaseModel):
    """Metadata file of one capture (node-internal, not an MQTT payload)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capture_id: str
    source: str = "mqtt"
    received_at: float
    fired_at: float
    at: float | None = None
    frames: list[Frame]
    retrieved: bool = False
    stored_at: float = Field(default_factory=time.time)


@dataclass(frozen=True)
class StoreLimits:
    """Bounds of the store."""

    max_bytes: int = 2 * 1024**3
    min_free_bytes: int = 256 * 1024**2
    evict_retrieved: bool = False


def image_name(camera: int, fmt: str) -> str:
    """File name of one camera's image inside a capture folder."""
    return f"cam{camera}.{FILE_EXTENSIONS[fmt]}"


class CaptureStore:
    """Captures under ``<root>/captures/<id>/``; written to ``<root>/staging`` then renamed."""

    def __init__(self, root: Path, limits: StoreLimits | None = None) -> None:
        self.root = root
        self.limits = limits or StoreLimits()
        self._captures_dir = root / "captures"
        self._staging = root / "staging"
        self._cond = threading.Condition()
        self._held: dict[str, StoredCapture] = {}
        self._sizes: dict[str, int] = {}
        self._pending: set[str] = set()
        self._captures_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._staging, ignore_errors=True)  # half-written captures of a crash
        self._staging.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        for folder in sorted(self._captures_dir.iterdir()):
            meta_path = folder / META_NAME
            try:
                meta = StoredCapture.model_validate_json(meta_path.read_bytes())
            except (OSError, ValidationError) as exc:
                logger.warning("ignoring unreadable capture folder %s: %s", folder, exc)
                continue
            if meta.capture_id != folder.name:
                logger.warning(
                    "ignoring capture folder %s: metadata names %s", folder, meta.capture_id
                )
                continue
            if not meta.retrieved and (folder / RETRIEVED_NAME).exists():
                meta = meta.model_copy(update={"retrieved": True})
            self._held[meta.capture_id] = meta
            self._sizes[meta.capture_id] = _folder_bytes(folder)
        logger.info("store %s holds %d captures", self._captures_dir, len(self._held))

    # -- reservations -------------------------------------------------------------------------

    def reserve(self, capture_id: str, *, rename_held: bool = False) -> None:
        """Mark ``capture_id`` as being taken; DuplicateCapture if held or already pending.

        With ``rename_held`` (a Thrift re-capture) a held capture of that id is first moved
        aside to ``<id>.rN``, under the same lock: a reader never sees the id neither held
        nor pending.
        """
        validate_capture_id(capture_id)
        with self._cond:
            if rename_held and capture_id in self._held:
                self._rename_aside_locked(capture_id)
            if capture_id in self._held or capture_id in self._pending:
                raise DuplicateCapture(f"capture {capture_id} is already held by this node")
            self._pending.add(capture_id)

    def abandon(self, capture_id: str) -> None:
        """A reserved capture failed; waiters are told it will not come."""
        with self._cond:
            self._pending.discard(capture_id)
            self._cond.notify_all()

    def rename_aside(self, capture_id: str) -> str:
        """Move a held capture to the next free ``<id>.rN`` id (Thrift re-capture keeps it)."""
        with self._cond:
            return self._rename_aside_locked(capture_id)

    def _rename_aside_locked(self, capture_id: str) -> str:
        old = self._held.get(capture_id)
        if old is None:
            raise CaptureNotFound(f"no capture {capture_id} to rename")
        new_id = self._free_aside_id(capture_id)
        src, dst = self._captures_dir / capture_id, self._captures_dir / new_id
        os.replace(src, dst)
        renamed = old.model_copy(update={"capture_id": new_id})
        write_atomic(dst / META_NAME, renamed.model_dump_json(indent=1).encode())
        self._held[new_id] = renamed
        self._sizes[new_id] = self._sizes.pop(capture_id)
        del self._held[capture_id]
        logger.info("capture %s kept as %s before re-capture", capture_id, new_id)
        return new_id

    def _free_aside_id(self, capture_id: str) -> str:
        for n in range(1, 100000):
            suffix = f".r{n}"
            candidate = capture_id[: 64 - len(suffix)] + suffix
            if (
                candidate not in self._held
                and candidate not in self._pending
                and is_capture_id(candidate)
            ):
                return candidate
        raise StoreError(f"no free id to keep capture {capture_id} aside")

    # -- space ----------------------------------------------------------------------------------

    def check_space(self, incoming_bytes: int = 0) -> None:
        """StoreFull unless ``incoming_bytes`` more fit (evicting retrieved captures if allowed)."""
        with self._cond:
            self._make_room(incoming_bytes)

    def _make_room(self, incoming: int) -> None:
        while not self._fits(incoming):
            victim = self._eviction_candidate()
            if victim is None:
                used, free = self._used_bytes(), self._disk_free()
                raise StoreFull(
                    f"store full: {used} bytes held (limit {self.limits.max_bytes}), "
                    f"{free} bytes free on disk (reserve {self.limits.min_free_bytes}); "
                    "retrieve and release captures to make room"
                )
            logger.warning("store full: evicting retrieved capture %s", victim)
            self._delete_locked(victim)

    def _fits(self, incoming: int) -> bool:
        within_limit = self._used_bytes() + incoming <= self.limits.max_bytes
        return within_limit and self._disk_free() - incoming >= self.limits.min_free_bytes

    def _eviction_candidate(self) -> str | None:
        if not self.limits.evict_retrieved:
            return None
        retrieved = [c for c in self._held.values() if c.retrieved]
        return min(retrieved, key=lambda c: c.stored_at).capture_id if retrieved else None

    def _used_bytes(self) -> int:
        return sum(self._sizes.values())

    def _disk_free(self) -> int:
        return shutil.disk_usage(self.root).free

    # -- commit ---------------------------------------------------------------------------------

    def commit(self, capture: StoredCapture, images: dict[int, bytes]) -> None:
        """Write a reserved capture atomically (all images + metadata, or nothing)."""
        capture_id = capture.capture_id
        total = sum(len(b) for b in images.values())
        try:
            with self._cond:
                self._make_room(total)
            staging = self._staging / f"{capture_id}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            for frame in capture.frames:
                write_synced(staging / image_name(frame.camera, frame.format), images[frame.camera])
            write_synced(staging / META_NAME, capture.model_dump_json(indent=1).encode())
            fsync_dir(staging)
            with self._cond:
                os.replace(staging, self._captures_dir / capture_id)
                fsync_dir(self._captures_dir)
                self._held[capture_id] = capture
                self._sizes[capture_id] = _folder_bytes(self._captures_dir / capture_id)
        finally:
            self.abandon(capture_id)

    # -- reading --------------------------------------------------------------------------------

    def get(self, capture_id: str) -> StoredCapture | None:
        with self._cond:
            return self._held.get(capture_id)

    def wait_for(self, capture_id: str, timeout: float) -> StoredCapture:
        """The capture, waiting up to ``timeout`` s while it is still being taken."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while capture_id in self._pending and capture_id not in self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CaptureNotFound(f"capture {capture_id} is still in progress; try again")
                self._cond.wait(remaining)
            found = self._held.get(capture_id)
        if found is None:
            raise CaptureNotFound(f"no images are stored under the capture id {capture_id!r}")
        return found

    def captures(self) -> list[StoredCapture]:
        """Every held capture, oldest first."""
        with self._cond:
            return sorted(self._held.values(), key=lambda c: c.stored_at)

    def read_image(self, capture_id: str, camera: int, fmt: ImageFormat) -> tuple[bytes, Frame]:
        """One image as stored, or converted to ``fmt`` (cached beside it). Marks it retrieved."""
        capture = self.wait_for(capture_id, timeout=0)
        frame = next((f for f in capture.frames if f.camera == camera), None)
        if frame is None:
            raise CaptureNotFound(f"capture {capture_id} has no camera {camera}")
        folder = self._captures_dir / capture_id
        try:
            stored = (folder / image_name(camera, frame.format)).read_bytes()
            data = stored if fmt == frame.format else self._converted(folder, stored, frame, fmt)
        except FileNotFoundError as exc:
            raise CaptureNotFound(f"capture {capture_id} was released while reading") from exc
        self._mark_retrieved(capture)
        return data, frame

    def open_image(self, capture_id: str, camera: int) -> tuple[BinaryIO, Frame]:
        """One image's stored file, open for reading (the caller closes it), and its frame.

        Marks it retrieved. The open file stays readable even if the capture is released
        meanwhile."""
        capture = self.wait_for(capture_id, timeout=0)
        frame = next((f for f in capture.frames if f.camera == camera), None)
        if frame is None:
            raise CaptureNotFound(f"capture {capture_id} has no camera {camera}")
        path = self._captures_dir / capture_id / image_name(camera, frame.format)
        try:
            stored = path.open("rb")
        except FileNotFoundError as exc:
            raise CaptureNotFound(f"capture {capture_id} was released while reading") from exc
        try:
            self._mark_retrieved(capture)
        except BaseException:
            stored.close()
            raise
        return stored, frame

    def _converted(self, folder: Path, stored: bytes, frame: Frame, fmt: ImageFormat) -> bytes:
        cached = folder / image_name(frame.camera, fmt)
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        data = convert_image(stored, frame.format, fmt)
        write_atomic(cached, data, durable_dir=False)
        with self._cond:
            if folder.name in self._sizes:
                self._sizes[folder.name] = _folder_bytes(folder)
        return data

    def _mark_retrieved(self, capture: StoredCapture) -> None:
        if capture.retrieved:
            return
        with self._cond:
            current = self._held.get(capture.capture_id)
            if current is None or current.retrieved:
                return
            self._held[capture.capture_id] = current.model_copy(update={"retrieved": True})
            # An empty marker, not an fsync'd rewrite of the metadata on the first fetch's
            # path: lost in a power cut it only makes the capture look not yet fetched
            # (kept longer under --evict-retrieved), while the metadata is never at risk.
            marker = self._captures_dir / capture.capture_id / RETRIEVED_NAME
            with contextlib.suppress(FileNotFoundError):  # released meanwhile
                marker.touch()

    # -- release --------------------------------------------------------------------------------

    def release(self, capture_id: str) -> bool:
        """Delete a capture the controller has verified; False if it is not held."""
        with self._cond:
            if capture_id not in self._held:
                return False
            self._delete_locked(capture_id)
        logger.info("released capture %s", capture_id)
        return True

    def release_matching(self, capture_id: str, expected: dict[int, str]) -> str | None:
        """Delete the capture whose images have exactly the ``expected`` checksums (camera ->
        sha256): the one held as ``capture_id``, else the one holding the first expected
        image (ours, renamed aside by a re-capture). Checked and deleted under one lock; the
        id deleted, or None if no held capture matches."""
        with self._cond:
            target = self._matching_locked(capture_id, expected)
            if target is None:
                return None
            self._delete_locked(target)
        logger.info("released capture %s", target)
        return target

    def _matching_locked(self, capture_id: str, expected: dict[int, str]) -> str | None:
        held = self._held.get(capture_id)
        if held is not None and {f.camera: f.sha256 for f in held.frames} == expected:
            return capture_id
        if not expected:
            return None
        camera, sha256 = next(iter(expected.items()))
        for cid, capture in self._held.items():
            if any(f.camera == camera and f.sha256 == sha256 for f in capture.frames):
                return cid
        return None

    def _delete_locked(self, capture_id: str) -> None:
        # Rename first so a crash never leaves a half-deleted capture under its id.
        doomed = self._staging / f"deleted-{capture_id}-{uuid.uuid4().hex[:8]}"
        os.replace(self._captures_dir / capture_id, doomed)
        del self._held[capture_id]
        self._sizes.pop(capture_id, None)
        shutil.rmtree(doomed, ignore_errors=True)

    def info(self) -> StoreInfo:
        """Counts for the heartbeat."""
        with self._cond:
            used = self._used_bytes()
            room = min(self.limits.max_bytes - used, self._disk_free() - self.limits.min_free_bytes)
            return StoreInfo(captures=len(self._held), bytes=used, free_bytes=max(room, 0))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
