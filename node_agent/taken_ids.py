"""The capture ids a node has taken: an idempotency record that outlives the captures.

A capture id is released (deleted) once the controller has its copy; a trigger re-sent
with the same id after that must still be a ``duplicate``, or one trigger makes a second,
split capture set. The record is a small append-only file in the data dir, bounded by
count and age, rewritten when it has grown to twice its bound.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.schemas.ids import is_capture_id

logger = logging.getLogger(__name__)

TAKEN_IDS_FILE = "taken-ids.log"
DAY_S = 86400.0


class TakenIds:
    """Ids taken, newest last: ``taken_at`` answers from memory; ``add`` appends durably."""

    def __init__(
        self,
        path: Path | None,
        max_ids: int = 10_000,
        max_age_s: float = 30 * DAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``path`` None keeps the record in memory only (tests, tools)."""
        self.path = path
        self.max_ids = max(1, max_ids)
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._lines = 0
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def taken_at(self, capture_id: str) -> float | None:
        """When ``capture_id`` was taken (Unix s), or None if it is not remembered."""
        with self._lock:
            self._forget_old()
            return self._ids.get(capture_id)

    def add(self, capture_id: str) -> None:
        """Remember ``capture_id`` as taken now (persistently when there is a file)."""
        now = self._clock()
        with self._lock:
            self._ids.pop(capture_id, None)
            self._ids[capture_id] = now
            self._forget_old()
            if self.path is None:
                return
            if self._lines + 1 >= 2 * self.max_ids:
                self._rewrite(self.path)
            else:
                self._append(self.path, f"{now:.3f} {capture_id}\n")

    def _forget_old(self) -> None:
        horizon = self._clock() - self.max_age_s
        while self._ids and (
            len(self._ids) > self.max_ids or next(iter(self._ids.values())) < horizon
        ):
            self._ids.popitem(last=False)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.warning("cannot read the record of taken capture ids %s: %s", path, exc)
            return
        bad = 0
        for line in text.splitlines():
            stamp, _, capture_id = line.partition(" ")
            try:
                taken = float(stamp)
            except ValueError:
                bad += 1
                continue
            if not is_capture_id(capture_id) or taken != taken:  # NaN from a damaged file
                bad += 1
                continue
            self._ids.pop(capture_id, None)
            self._ids[capture_id] = taken
            self._lines += 1
        self._forget_old()
        if bad:
            logger.warning("%s: %d unreadable lines skipped", path, bad)
        if bad or self._lines > len(self._ids):
            self._rewrite(path)
        logger.info("%d capture ids remembered as taken (%s)", len(self._ids), path)

    def _append(self, path: Path, line: str) -> None:
        try:
            with path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fdatasync(out.fileno())
        except OSError as exc:
            logger.error("cannot record taken capture id in %s: %s", path, exc)
            return
        self._lines += 1

    def _rewrite(self, path: Path) -> None:
        text = "".join(f"{t:.3f} {i}\n" for i, t in self._ids.items())
        try:
            write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            logger.error("cannot rewrite the record of taken capture ids %s: %s", path, exc)
            return
        self._lines = len(self._ids)
