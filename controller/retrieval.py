"""Fetch owed images from one node, verify them, write them atomically; follow renamed captures."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pepi_fleet.controller.ledger import Ledger, OwedImage
from pepi_fleet.controller.node_client import NodeClient, NodeUnreachable, RetrievalError
from pepi_fleet.core.atomic import fsync_dir
from pepi_fleet.core.early_write import EarlyWriter

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


@dataclass
class FetchReport:
    """What one fetch pass did: row ids written and verified, and row id → error."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class Cursor:
    """The capture a download pass is on: named when the pass stops on an unexpected error."""

    capture_id: str | None = None


def retry_delay(attempts: int) -> float:
    """Back-off before the next try after ``attempts`` failed ones (doubling, capped)."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


def sha256_of(path: Path) -> str | None:
    """Hex sha256 of a file, or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


BATCH_IMAGES = 32
BATCH_BYTES = 256 * 1024 * 1024
"""A pass makes its images durable together (fsyncs, renames, one fsync per directory, one
ledger commit) every this many images or bytes, and at its end."""


@dataclass
class _Staged:
    """An image received and verified into its temp file, not yet durable or in place."""

    row: OwedImage
    tmp: Path
    fd: int

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.tmp.unlink(missing_ok=True)


class ImageFetcher:
    """Downloads one node's owed images; marks each row done only after its sha256 matched
    and its file is durable in place.

    Each image is hashed while it arrives and written straight to a temp file; a batch of
    them is then fsync'd, renamed into place and its directories fsync'd once, and only then
    are its rows marked done (a controller killed before that refetches them)."""

    def __init__(
        self,
        client: NodeClient,
        data_dir: Path,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
        cursor: Cursor | None = None,
    ) -> None:
        self._client = client
        self._data_dir = data_dir
        self._ledger = ledger
        self._clock = clock
        self._cursor = cursor or Cursor()

    def fetch(self, rows: Sequence[OwedImage]) -> FetchReport:
        """Fetch, verify and write each row; a failure marks the row failed with back-off."""
        report = FetchReport()
        staged: list[_Staged] = []
        try:
            for i, row in enumerate(rows):
                self._cursor.capture_id = row.node_capture_id
                self._ledger.mark_downloading(row.id)
                try:
                    staged.append(self._receive(row))
                except NodeUnreachable as exc:
                    # The connection is gone: the rest back off with this one.
                    self._fail_rest(report, rows[i:], str(exc))
                    break
                except RetrievalError as exc:
                    self._failed(report, row, str(exc))
                    continue
                except OSError as exc:
                    # Writing failed (disk full, permissions): so would the rest.
                    self._fail_rest(report, rows[i:], f"writing {row.path} failed: {exc!r}")
                    break
                if len(staged) >= BATCH_IMAGES or sum(s.row.size for s in staged) >= BATCH_BYTES:
                    batch, staged = staged, []
                    self._commit(batch, report)
            batch, staged = staged, []
            self._commit(batch, report)
        finally:
            for leftover in staged:  # only when the pass stops on an unexpected error
                leftover.discard()
        return report

    def _commit(self, batch: list[_Staged], report: FetchReport) -> None:
        """Make a batch durable in place, then mark its rows done in one commit."""
        if not batch:
            return
        try:
            for staged in batch:
                os.fsync(staged.fd)
            for staged in batch:
                os.replace(staged.tmp, self._data_dir / staged.row.path)
            for folder in sorted({(self._data_dir / s.row.path).parent for s in batch}):
                fsync_dir(folder)
        except OSError as exc:
            for staged in batch:
                self._failed(report, staged.row, f"writing {staged.row.path} failed: {exc!r}")
            return
        finally:
            for staged in batch:
                staged.discard()  # closes it; the temp file is gone once renamed
        self._ledger.mark_done_many([s.row.id for s in batch])
        report.done.extend(s.row.id for s in batch)
        logger.debug("%d images in place, up to %s", len(batch), batch[-1].row.path)

    def _receive(self, row: OwedImage) -> _Staged:
        try:
            return self._receive_verified(row, row.node_capture_id)
        except NodeUnreachable:
            raise
        except RetrievalError as exc:
            # A PEPI client re-using the code made the node keep our capture renamed aside.
            moved = locate(self._client, row.camera, row.sha256)
            if moved is None or moved == row.node_capture_id:
                raise
            logger.info(
                "node %s holds %s as %s now (%s)", row.node_id, row.node_capture_id, moved, exc
            )
            self._ledger.relocate(row.set_id, row.node_id, moved)
            return self._receive_verified(row, moved)

    def _receive_verified(self, row: OwedImage, node_capture_id: str) -> _Staged:
        """The image received into a temp file beside its place, checked against the row."""
        path = self._data_dir / row.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        staged = _Staged(row, tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        try:
            image = self._client.receive_image(
                node_capture_id, row.camera, row.format, EarlyWriter(staged.fd), row.size
            )
            if image.sha256 != row.sha256 or image.size != row.size:
                raise RetrievalError(
                    f"corrupt transfer: got {image.size} bytes with sha256 {image.sha256[:12]}…, "
                    f"expected {row.size} bytes with {row.sha256[:12]}…"
                )
            if image.reported_sha256 != row.sha256:
                raise RetrievalError(
                    f"node reports sha256 {image.reported_sha256!r}, ledger has {row.sha256}"
                )
        except BaseException:
            staged.discard()
            raise
        return staged

    def _fail_rest(self, report: FetchReport, rows: Sequence[OwedImage], error: str) -> None:
        for row in rows:
            self._failed(report, row, error)

    def _failed(self, report: FetchReport, row: OwedImage, error: str) -> None:
        retry_at = self._clock() + retry_delay(row.attempts + 1)
        self._ledger.mark_failed(row.id, error, retry_at)
        report.failed[row.id] = error
        logger.warning("image %s from node %s: %s", row.path, row.node_id, error)


def locate(client: NodeClient, camera: int, sha256: str) -> str | None:
    """The id under which the node holds the image with this checksum, if it does."""
    for held in client.list_captures():
        if any(f.camera == camera and f.sha256 == sha256 for f in held.frames):
            return held.capture_id
    return None
