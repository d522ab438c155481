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

from thriftpy2.rpc import make_client
from thriftpy2.thrift import TException

from controller.ledger import Ledger, OwedImage
from controller.manifest import write_atomic
from node_agent.pepi_idl import load
from schemas import PepiError

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
        ImageUnavailable = load().ImageUnavailable
        try:
            blob = client.fetch_image(row.node_capture_id, row.camera, row.format)
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
        write_atomic(self._data_dir / row.path, data)
        logger.debug("fetched %s (%s bytes)", row.path, len(data))

    def _failed(self, report: FetchReport, row: OwedImage, error: str) -> None:
        retry_at = self._clock() + retry_delay(row.attempts + 1)
        self._ledger.mark_failed(row.id, error, retry_at)
        report.failed[row.id] = error
        logger.warning("image %s from node %s: %s", row.path, row.node_id, error)


def release_capture(host: str, port: int, node_capture_id: str, timeout_ms: int) -> bool:
    """Ask the node to delete a capture the controller holds verified; False if not held.

    Raises RetrievalError when the node cannot be reached (retry later).
    """
    with _client(host, port, timeout_ms) as client:
        try:
            return bool(client.release(node_capture_id))
        except (TException, OSError) as exc:
            raise RetrievalError(f"release of {node_capture_id} on {host}:{port}: {exc!r}") from exc
