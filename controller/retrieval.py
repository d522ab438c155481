"""Fetch owed images from one node, verify them, write them atomically; follow renamed captures."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pepi_fleet.controller.ledger import Ledger, OwedImage
from pepi_fleet.controller.node_client import NodeClient, NodeUnreachable, RetrievalError
from pepi_fleet.core.atomic import write_atomic

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


class ImageFetcher:
    """Downloads one node's owed images; marks each row done only after its sha256 matched."""

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
        for i, row in enumerate(rows):
            self._cursor.capture_id = row.node_capture_id
            self._ledger.mark_downloading(row.id)
            try:
                self._fetch_one(row)
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
            self._ledger.mark_done(row.id)
            report.done.append(row.id)
        return report

    def _fetch_one(self, row: OwedImage) -> None:
        try:
            data = self._fetch_verified(row, row.node_capture_id)
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
            data = self._fetch_verified(row, moved)
        write_atomic(self._data_dir / row.path, data)
        logger.debug("fetched %s (%s bytes)", row.path, len(data))

    def _fetch_verified(self, row: OwedImage, node_capture_id: str) -> bytes:
        image = self._client.fetch_image(node_capture_id, row.camera, row.format)
        actual = hashlib.sha256(image.data).hexdigest()
        if actual != row.sha256 or len(image.data) != row.size:
            raise RetrievalError(
                f"corrupt transfer: got {len(image.data)} bytes with sha256 {actual[:12]}…, "
                f"expected {row.size} bytes with {row.sha256[:12]}…"
            )
        if image.sha256 != row.sha256:
            raise RetrievalError(f"node reports sha256 {image.sha256!r}, ledger has {row.sha256}")
        return image.data

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


def release_capture(
    client: NodeClient, node_capture_id: str, expected: dict[int, str]
) -> str | None:
    """Ask the node to delete the capture the controller holds verified.

    ``expected`` maps camera -> sha256 of what the controller stored: the node deletes
    what it holds under ``node_capture_id`` only if it is that capture; if a PEPI client
    re-used the code, the node renamed ours aside and that one is released instead.
    Returns the id released, or None when the node no longer holds the capture. Raises
    RetrievalError when the node cannot be reached (retry later).
    """
    target = _held_as(client, node_capture_id, expected)
    if target is None or not client.release(target):
        return None
    return target


def _held_as(client: NodeClient, node_capture_id: str, expected: dict[int, str]) -> str | None:
    held = client.get_capture(node_capture_id)
    if held is not None and {f.camera: f.sha256 for f in held.frames} == expected:
        return node_capture_id
    if not expected:
        return None
    camera, sha256 = next(iter(expected.items()))
    return locate(client, camera, sha256)
