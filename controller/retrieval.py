"""Fetch owed images from one node over Thrift, verify them, write them atomically."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TException

from pepi_fleet.controller.ledger import Ledger, OwedImage
from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.core.idl import load
from pepi_fleet.core.thrift_map import result_of
from pepi_fleet.schemas import PepiError
from pepi_fleet.schemas.capture import CaptureResult

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 15_000
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


class RetrievalError(PepiError):
    """A node could not be reached or did not deliver what it owes."""


@dataclass
class FetchReport:
    """What one fetch pass did: row ids written and verified, and row id → error."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


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


@contextmanager
def _client(host: str, port: int, timeout_ms: int) -> Iterator[Any]:
    try:
        client = make_client(load().FleetCameraServer, host, port, timeout=timeout_ms)
    except (TException, OSError) as exc:
        raise RetrievalError(
            f"cannot reach node at {host}:{port}: {exc or type(exc).__name__}"
        ) from exc
    try:
        yield client
    finally:
        client.close()


class ImageFetcher:
    """Downloads one node's owed images; marks each row done only after its sha256 matched."""

    def __init__(
        self,
        host: str,
        port: int,
        data_dir: Path,
        ledger: Ledger,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host, self.port, self.timeout_ms = host, port, timeout_ms
        self._data_dir = data_dir
        self._ledger = ledger
        self._clock = clock

    def fetch(self, rows: Sequence[OwedImage]) -> FetchReport:
        """Fetch, verify and write each row; a failure marks the row failed with back-off."""
        report = FetchReport()
        if not rows:
            return report
        try:
            with _client(self.host, self.port, self.timeout_ms) as client:
                for i, row in enumerate(rows):
                    self._ledger.mark_downloading(row.id)
                    try:
                        self._fetch_one(client, row)
                    except RetrievalError as exc:
                        self._failed(report, row, str(exc))
                        continue
                    except (TException, OSError) as exc:
                        # The connection is gone: the rest back off with this one.
                        error = f"fetch from {self.host}:{self.port} failed: {exc!r}"
                        for rest in rows[i:]:
                            self._failed(report, rest, error)
                        break
                    self._ledger.mark_done(row.id)
                    report.done.append(row.id)
        except RetrievalError as exc:
            for row in rows:
                if row.id not in report.done and row.id not in report.failed:
                    self._failed(report, row, str(exc))
        return report

    def _fetch_one(self, client: Any, row: OwedImage) -> None:
        try:
            data = self._fetch_verified(client, row, row.node_capture_id)
        except RetrievalError as exc:
            # A PEPI client re-using the code made the node keep our capture renamed aside.
            moved = locate(client, row.camera, row.sha256)
            if moved is None or moved == row.node_capture_id:
                raise
            logger.info(
                "node %s holds %s as %s now (%s)", row.node_id, row.node_capture_id, moved, exc
            )
            self._ledger.relocate(row.set_id, row.node_id, moved)
            data = self._fetch_verified(client, row, moved)
        write_atomic(self._data_dir / row.path, data)
        logger.debug("fetched %s (%s bytes)", row.path, len(data))

    @staticmethod
    def _fetch_verified(client: Any, row: OwedImage, node_capture_id: str) -> bytes:
        ImageUnavailable = load().ImageUnavailable
        try:
            blob = client.fetch_image(node_capture_id, row.camera, row.format)
        except ImageUnavailable as exc:
            raise RetrievalError(f"node no longer has it: {exc.message}") from exc
        data: bytes = blob.data or b""
        actual = hashlib.sha256(data).hexdigest()
        if actual != row.sha256 or len(data) != row.size:
            raise RetrievalError(
                f"corrupt transfer: got {len(data)} bytes with sha256 {actual[:12]}…, "
                f"expected {row.size} bytes with {row.sha256[:12]}…"
            )
        if blob.sha256 != row.sha256:
            raise RetrievalError(f"node reports sha256 {blob.sha256!r}, ledger has {row.sha256}")
        return data

    def _failed(self, report: FetchReport, row: OwedImage, error: str) -> None:
        retry_at = self._clock() + retry_delay(row.attempts + 1)
        self._ledger.mark_failed(row.id, error, retry_at)
        report.failed[row.id] = error
        logger.warning("image %s from node %s: %s", row.path, row.node_id, error)


def locate(client: Any, camera: int, sha256: str) -> str | None:
    """The id under which the node holds the image with this checksum, if it does."""
    for info in client.list_captures():
        if any(f.camera == camera and f.sha256 == sha256 for f in info.frames or []):
            return str(info.capture_id)
    return None


def release_capture(
    host: str, port: int, node_capture_id: str, expected: dict[int, str], timeout_ms: int
) -> str | None:
    """Ask the node to delete the capture the controller holds verified.

    ``expected`` maps camera -> sha256 of what the controller stored: the node deletes
    what it holds under ``node_capture_id`` only if it is that capture; if a PEPI client
    re-used the code, the node renamed ours aside and that one is released instead.
    Returns the id released, or None when the node no longer holds the capture. Raises
    RetrievalError when the node cannot be reached (retry later).
    """
    with _client(host, port, timeout_ms) as client:
        try:
            target = _held_as(client, node_capture_id, expected)
            if target is None or not client.release(target):
                return None
            return target
        except (TException, OSError) as exc:
            raise RetrievalError(f"release of {node_capture_id} on {host}:{port}: {exc!r}") from exc


def _held_as(client: Any, node_capture_id: str, expected: dict[int, str]) -> str | None:
    try:
        info = client.get_capture(node_capture_id)
    except load().ImageUnavailable:
        info = None
    if info is not None and {f.camera: f.sha256 for f in info.frames or []} == expected:
        return node_capture_id
    if not expected:
        return None
    camera, sha256 = next(iter(expected.items()))
    return locate(client, camera, sha256)


def list_held(host: str, port: int, node_id: str, timeout_ms: int) -> list[CaptureResult]:
    """Every capture the node holds, as the ok results it published (or should have)."""
    with _client(host, port, timeout_ms) as client:
        try:
            infos = client.list_captures()
        except (TException, OSError) as exc:
            raise RetrievalError(f"list_captures on {host}:{port}: {exc!r}") from exc
    held = []
    for info in infos:
        try:
            held.append(result_of(node_id, info))
        except ValidationError as exc:
            logger.warning("node %s lists %r unreadably: %s", node_id, info.capture_id, exc)
    return held
