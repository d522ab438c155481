"""The download ledger: capture sets, node results and owed images in SQLite."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pepi_fleet.schemas import CaptureResult, CaptureStatus, PepiError
from pepi_fleet.schemas.capture import FILE_EXTENSIONS

logger = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite3"
SCHEMA_VERSION = 1
THRIFT_HOLD_S = 600.0
"""How long a capture started over Thrift stays on its node after the controller has it."""

_SCHEMA = """
CREATE TABLE capture_sets (
    set_id TEXT PRIMARY KEY, kind TEXT NOT NULL, triggered_at REAL NOT NULL, at REAL,
    target_node TEXT, expected TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open',
    completed_at REAL, spread_s REAL, fired_spread_s REAL, manifest_at REAL,
    summarized_at REAL, created_at REAL NOT NULL, unreachable TEXT NOT NULL DEFAULT '{}');
CREATE INDEX capture_sets_newest ON capture_sets (triggered_at DESC);
CREATE TABLE node_results (
    set_id TEXT NOT NULL REFERENCES capture_sets (set_id), node_id TEXT NOT NULL,
    node_capture_id TEXT NOT NULL, status TEXT NOT NULL, fired_at REAL,
    result_json TEXT NOT NULL, recorded_at REAL NOT NULL, released_at REAL,
    release_attempts INTEGER NOT NULL DEFAULT 0, release_error TEXT,
    PRIMARY KEY (set_id, node_id));
CREATE TABLE owed_images (
    id INTEGER PRIMARY KEY, set_id TEXT NOT NULL REFERENCES capture_sets (set_id),
    node_id TEXT NOT NULL, node_capture_id TEXT NOT NULL, camera INTEGER NOT NULL,
    format TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, frame_ts REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'downloading', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at REAL,
    path TEXT NOT NULL, updated_at REAL NOT NULL, UNIQUE (set_id, node_id, camera));
CREATE INDEX owed_images_by_node ON owed_images (node_id, state);
"""


class LedgerError(PepiError):
    """The ledger file cannot be used."""


class ImageState(StrEnum):
    """Download state of one owed image."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class OwedImage:
    """One image a node owes; ``path`` is relative to the data dir."""

    id: int
    set_id: str
    node_id: str
    node_capture_id: str
    camera: int
    format: str
    sha256: str
    size: int
    frame_ts: float
    state: ImageState
    attempts: int
    last_error: str | None
    path: str


@dataclass(frozen=True)
class SetRecord:
    """One capture set with its download counts."""

    set_id: str
    kind: str
    triggered_at: float
    at: float | None
    target_node: str | None
    expected: tuple[str, ...]
    state: str
    completed_at: float | None
    spread_s: float | None
    fired_spread_s: float | None
    manifest_at: float | None
    images_total: int
    images_done: int
    images_failed: int
    unreachable: Mapping[str, str]
    """node -> site of the nodes the trigger could not reach (their site's bridge was down)."""


@dataclass(frozen=True)
class ResultRecord:
    """One node's result in a set and whether its capture was released on the node."""

    set_id: str
    node_id: str
    node_capture_id: str
    result: CaptureResult
    recorded_at: float
    released_at: float | None
    release_error: str | None


@dataclass(frozen=True)
class SetDetail:
    """A set with its results and owed images."""

    record: SetRecord
    results: tuple[ResultRecord, ...]
    images: tuple[OwedImage, ...]


def image_path(set_id: str, node_id: str, camera: int, fmt: str) -> str:
    """PEPI's naming, relative to the data dir: ``<set>/id<node>_d<set>_cam<n>.<ext>``."""
    return f"{set_id}/id{node_id}_d{set_id}_cam{camera}.{FILE_EXTENSIONS.get(fmt, fmt)}"


_SET_COLUMNS = """s.set_id, s.kind, s.triggered_at, s.at, s.target_node, s.expected, s.state,
    s.completed_at, s.spread_s, s.fired_spread_s, s.manifest_at,
    (SELECT COUNT(*) FROM owed_images i WHERE i.set_id = s.set_id),
    (SELECT COUNT(*) FROM owed_images i WHERE i.set_id = s.set_id AND i.state = 'done'),
    (SELECT COUNT(*) FROM owed_images i WHERE i.set_id = s.set_id AND i.state = 'failed'),
    s.unreachable"""
_IMAGE_COLUMNS = """id, set_id, node_id, node_capture_id, camera, format, sha256, size, frame_ts,
    state, attempts, last_error, path"""


_SETS_NEWEST = "FROM capture_sets s ORDER BY s.triggered_at DESC, s.set_id"
# A capture started over Thrift belongs to a PEPI client too, which retrieves it by code
# later and cannot release: the node keeps it for the hold time after it fired (the ?).
_RELEASABLE = """r.status = 'ok' AND r.released_at IS NULL AND NOT EXISTS (SELECT 1
    FROM owed_images i WHERE i.set_id = r.set_id AND i.node_id = r.node_id AND i.state != 'done')
    AND (COALESCE(json_extract(r.result_json, '$.source'), 'mqtt') != 'thrift'
         OR COALESCE(r.fired_at, 0) <= ?)"""
_RELEASED = """UPDATE node_results SET release_attempts = release_attempts + 1,
    release_error = ?, released_at = CASE WHEN ? IS NULL THEN ? END
    WHERE set_id = ? AND node_id = ?"""
_RESULTS_OF_SET = """SELECT set_id, node_id, node_capture_id, result_json, recorded_at,
    released_at, release_error FROM node_results WHERE set_id = ? ORDER BY node_id"""
# After every result: each bound alone is one look-up in an index (set, value), not a pass
# over the set's rows (a set of 1000 nodes would be read 1000 times as it fills).
_SPREADS = """UPDATE capture_sets SET
    spread_s = (SELECT MAX(frame_ts) FROM owed_images WHERE set_id = :s)
        - (SELECT MIN(frame_ts) FROM owed_images WHERE set_id = :s),
    fired_spread_s = (SELECT MAX(fired_at) FROM node_results WHERE set_id = :s)
        - (SELECT MIN(fired_at) FROM node_results WHERE set_id = :s)
    WHERE set_id = :s"""
_NOT_DONE = "('pending', 'downloading', 'failed')"
_MANIFEST_KEY = """SELECT (SELECT COUNT(*) FROM node_results WHERE set_id = ?),
    (SELECT COUNT(*) FROM owed_images WHERE set_id = ? AND state = 'done'),
    (SELECT COUNT(*) FROM owed_images WHERE set_id = ?), completed_at, state
    FROM capture_sets WHERE set_id = ?"""
_OWED = (
    "(state = 'pending' OR (state = 'failed' AND (? IS NULL OR COALESCE(next_attempt_at, 0) <= ?)))"
)


class Ledger:
    """``<data_dir>/ledger.sqlite3``: one connection, serialised by a lock, safe across threads."""

    def __init__(
        self,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
        thrift_hold_s: float = THRIFT_HOLD_S,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LEDGER_FILE
        self._clock = clock
        self._thrift_hold_s = thrift_hold_s
        self._lock = threading.RLock()  # re-entered by the writes of a ``batch``
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._migrate()
        except LedgerError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(
                f"cannot use ledger {self.path}: {exc}; move the file away to start a new one"
            ) from exc

    def _migrate(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a killed controller loses nothing; a power cut may lose the last
        # commits, never an image: each image file and the set's manifest are fsync'd before
        # the node is asked to release, an image whose row rolled back to pending is found
        # on disk by its checksum, and a capture the node still holds is found again by
        # reconciling with its list.
        # (FULL fsync'd every commit, serialised behind the ledger lock: -20 % throughput.)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema {version}, newer than this controller's "
                f"{SCHEMA_VERSION}: upgrade pepi-fleet or use another data dir"
            )
        if version == 0:
            try:
                self._db.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
            except sqlite3.DatabaseError:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        with self._tx() as db:
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(capture_sets)")}
            if "unreachable" not in columns:  # a ledger from before sites: nobody cut off
                db.execute(
                    "ALTER TABLE capture_sets ADD COLUMN unreachable TEXT NOT NULL DEFAULT '{}'"
                )
            # What a set still owes, read without visiting its verified images (a set of
            # 1000 nodes is asked after every download pass). Added to older ledgers too.
            db.execute(
                "CREATE INDEX IF NOT EXISTS owed_images_by_set ON owed_images (set_id, state)"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS owed_images_frame_ts ON owed_images (set_id, frame_ts)"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS node_results_fired ON node_results (set_id, fired_at)"
            )
            # What a node still has to release, and which nodes have work at all, without
            # reading the whole history (every capture of every node stays in the ledger).
            db.execute(
                "CREATE INDEX IF NOT EXISTS node_results_unreleased ON node_results (node_id)"
                " WHERE status = 'ok' AND released_at IS NULL"
            )
            db.execute("CREATE INDEX IF NOT EXISTS owed_images_by_state ON owed_images (state)")
            # A controller killed mid-download left these; nothing is downloading now.
            reset = db.execute(
                "UPDATE owed_images SET state = 'pending' WHERE state = 'downloading'"
            )
            if reset.rowcount:
                logger.info("ledger: %s interrupted downloads are pending again", reset.rowcount)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes made in the block (by this thread) commit together at its end, each still
        atomic on its own: one that fails rolls back alone. Other threads wait meanwhile.
        Without a transaction to be had, each write commits on its own, as outside."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                logger.warning("ledger: no transaction for a batch (%s); writing one by one", exc)
                yield
                return
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db.in_transaction:  # within ``batch``
                self._db.execute("SAVEPOINT write")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK TO write")
                    self._db.execute("RELEASE write")
                    raise
                self._db.execute("RELEASE write")
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One SELECT: atomic on its own, so no write lock and no BEGIN/COMMIT around it (a
        download pass reads the ledger several times)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> None:
        with self._tx() as db:
            db.execute(sql, args)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def record_set(
        self,
        set_id: str,
        triggered_at: float,
        expected: Iterable[str],
        *,
        kind: str = "explicit",
        at: float | None = None,
        target_node: str | None = None,
        unreachable: Mapping[str, str] | None = None,
    ) -> None:
        """Create a set, or merge ``expected`` into an existing one of that id.

        ``unreachable``: node -> site of the nodes the trigger could not reach (their
        site's bridge was down); merged too, less any node the set expects."""
        with self._tx() as db:
            row = db.execute(
                "SELECT expected, unreachable FROM capture_sets WHERE set_id = ?", (set_id,)
            )
            old = row.fetchone()
            nodes = set(expected) | set(json.loads(old[0]) if old else [])
            cut_off = {**(json.loads(old[1]) if old else {}), **(unreachable or {})}
            cut_off = {n: s for n, s in sorted(cut_off.items()) if n not in nodes}
            db.execute(
                "INSERT INTO capture_sets (set_id, kind, triggered_at, at, target_node, expected,"
                " created_at, unreachable) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (set_id)"
                " DO UPDATE SET expected = excluded.expected, at = COALESCE(excluded.at, at),"
                " unreachable = excluded.unreachable",
                (set_id, kind, triggered_at, at, target_node, json.dumps(sorted(nodes)),
                 self._clock(), json.dumps(cut_off)),
            )  # fmt: skip

    def record_result(
        self, set_id: str, result: CaptureResult, node_capture_id: str | None = None
    ) -> bool:
        """Store a node's result and what its frames owe; False if an earlier ok result stays.

        ``node_capture_id`` defaults to ``result.capture_id`` (what the node stored it under).
        A set not recorded yet is created for the result.
        """
        node_cid = node_capture_id or result.capture_id
        if node_cid is None:
            raise ValueError("a result without a capture id cannot be recorded")
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO capture_sets (set_id, kind, triggered_at, at, expected,"
                " created_at) VALUES (?, 'orphan', ?, ?, ?, ?)",
                (set_id, result.received_at, result.at, json.dumps([result.node_id]), now),
            )
            previous = db.execute(
                "SELECT status FROM node_results WHERE set_id = ? AND node_id = ?",
                (set_id, result.node_id),
            ).fetchone()
            if previous is not None and previous[0] == CaptureStatus.OK:
                return False
            # a node cut off at trigger time that answered after all is not cut off
            db.execute(
                "UPDATE capture_sets SET unreachable = json_remove(unreachable, ?)"
                " WHERE set_id = ? AND unreachable != '{}'",
                (f'$."{result.node_id}"', set_id),
            )
            db.execute(
                "INSERT OR REPLACE INTO node_results (set_id, node_id, node_capture_id, status,"
                " fired_at, result_json, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (set_id, result.node_id, node_cid, result.status, result.fired_at,
                 result.model_dump_json(), now),
            )  # fmt: skip
            if result.status is CaptureStatus.OK:
                db.executemany(
                    "INSERT OR IGNORE INTO owed_images (set_id, node_id, node_capture_id, camera,"
                    " format, sha256, size, frame_ts, path, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (set_id, result.node_id, node_cid, f.camera, f.format, f.sha256, f.bytes,
                         f.timestamp, image_path(set_id, result.node_id, f.camera, f.format), now)
                        for f in result.frames
                    ],
                )  # fmt: skip
            db.execute(_SPREADS, {"s": set_id})
            return True

    def owed_by(self, node_id: str, now: float | None = None) -> list[OwedImage]:
        """Pending or failed images of a node, oldest set first.

        With ``now``, failed images whose back-off has not run out are left for later.
        """
        sql = f"SELECT {_IMAGE_COLUMNS} FROM owed_images WHERE node_id = ? AND {_OWED} ORDER BY id"
        return [_image(r) for r in self._rows(sql, (node_id, now, now))]

    def nodes_owing_images(self, now: float | None = None) -> list[str]:
        """Nodes owing images (back-off respected with ``now``)."""
        sql = f"SELECT DISTINCT node_id FROM owed_images WHERE {_OWED} ORDER BY node_id"
        return [str(r[0]) for r in self._rows(sql, (now, now))]

    def nodes_with_work(self, now: float | None = None) -> list[str]:
        """Nodes owing images (back-off respected with ``now``) or with captures to release."""
        sql = (
            f"SELECT node_id FROM owed_images WHERE {_OWED} UNION SELECT node_id"
            f" FROM node_results r WHERE {_RELEASABLE} ORDER BY node_id"
        )
        return [str(r[0]) for r in self._rows(sql, (now, now, self._hold_before()))]

    def mark_downloading(self, image_id: int) -> None:
        """A transfer starts (a controller killed now leaves the row pending after restart)."""
        self._set_image(image_id, "state = 'downloading'", ())

    def mark_done(self, image_id: int) -> None:
        """The file is on disk and its sha256 matched."""
        self._set_image(image_id, "state = 'done', last_error = NULL, next_attempt_at = NULL", ())

    def mark_done_many(self, image_ids: list[int]) -> None:
        """``mark_done`` for a batch of images made durable together, in one commit."""
        if not image_ids:
            return
        sql = (
            "UPDATE owed_images SET state = 'done', last_error = NULL, next_attempt_at = NULL,"
            " updated_at = ? WHERE id = ?"
        )
        now = self._clock()
        with self._tx() as db:
            db.executemany(sql, [(now, image_id) for image_id in image_ids])

    def mark_failed(self, image_id: int, error: str, retry_at: float | None = None) -> None:
        """An attempt failed (counted); retry after ``retry_at`` (None: at the next pass)."""
        sql = "state = 'failed', attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
        self._set_image(image_id, sql, (error, retry_at))

    def _set_image(self, image_id: int, assignments: str, args: tuple[object, ...]) -> None:
        sql = f"UPDATE owed_images SET {assignments}, updated_at = ? WHERE id = ?"
        self._run(sql, (*args, self._clock(), image_id))

    def set_complete(
        self, set_id: str, completed_at: float | None = None, *, whole: bool = True
    ) -> None:
        """Assembly is over (every expected node answered, or the timeout passed).

        The set's state becomes ``complete``, or ``incomplete`` when it is not ``whole``
        (a node or camera missing, a node that fired outside the set's tolerance).
        """
        when = completed_at if completed_at is not None else self._clock()
        state = "complete" if whole else "incomplete"
        sql = "UPDATE capture_sets SET state = ?, completed_at = ? WHERE set_id = ?"
        self._run(sql, (state, when, set_id))

    def has_set(self, set_id: str) -> bool:
        """Whether a set of this id was ever recorded."""
        return bool(self._rows("SELECT 1 FROM capture_sets WHERE set_id = ?", (set_id,)))

    def holds_other_capture(self, set_id: str, result: CaptureResult) -> bool:
        """The set holds an ok capture of the result's node with other frames than ``result``."""
        earlier = self.ok_result(set_id, result.node_id)
        return (
            earlier is not None
            and result.status is CaptureStatus.OK
            and earlier.frames != result.frames
        )

    def mark_manifest_written(self, set_id: str) -> None:
        """Remember when the set's manifest was last written."""
        self._run(
            "UPDATE capture_sets SET manifest_at = ? WHERE set_id = ?", (self._clock(), set_id)
        )

    def mark_summarized(self, set_id: str) -> None:
        """The set's summary was published on ``controller/captures``."""
        self._run(
            "UPDATE capture_sets SET summarized_at = ? WHERE set_id = ?", (self._clock(), set_id)
        )

    def unsummarized(self) -> list[str]:
        """Sets whose summary was never published (a controller stopped before), oldest first."""
        sql = "SELECT set_id FROM capture_sets WHERE summarized_at IS NULL ORDER BY triggered_at"
        return [str(r[0]) for r in self._rows(sql, ())]

    def image_files(self, set_id: str) -> tuple[list[str], int]:
        """The paths of the set's verified images, and how many images it is owed in all
        (one indexed read, no result parsed: what a summary lists)."""
        sql = "SELECT path, state FROM owed_images WHERE set_id = ?"
        rows = self._rows(sql, (set_id,))
        return [str(r[0]) for r in rows if r[1] == ImageState.DONE], len(rows)

    def all_downloaded(self, set_id: str) -> bool:
        """True when every image the set is owed is done."""
        return not self.nodes_owing(set_id)

    def nodes_owing(self, set_id: str) -> set[str]:
        """The nodes that still owe images of the set (reads only those rows: an index)."""
        sql = f"SELECT DISTINCT node_id FROM owed_images WHERE set_id = ? AND state IN {_NOT_DONE}"
        return {str(r[0]) for r in self._rows(sql, (set_id,))}

    def manifest_key(self, set_id: str) -> tuple[object, ...]:
        """What a set's manifest is built from, in brief: results, images done and failed,
        completion. Equal keys, equal manifests (but for ``written_at`` and clock figures)."""
        rows = self._rows(_MANIFEST_KEY, (set_id, set_id, set_id, set_id))
        return tuple(rows[0]) if rows else ()

    def releasable(self, node_id: str) -> list[tuple[str, str]]:
        """``(set_id, node_capture_id)`` of ok results fully downloaded but not yet released."""
        sql = (
            "SELECT r.set_id, r.node_capture_id FROM node_results r"
            f" WHERE r.node_id = ? AND {_RELEASABLE} ORDER BY r.recorded_at"
        )
        return [(str(r[0]), str(r[1])) for r in self._rows(sql, (node_id, self._hold_before()))]

    def _hold_before(self) -> float:
        return self._clock() - self._thrift_hold_s

    def knows_capture(self, node_id: str, node_capture_id: str) -> bool:
        """Whether any set holds this node's capture (under the id the node stores it by)."""
        sql = "SELECT 1 FROM node_results WHERE node_id = ? AND node_capture_id = ? LIMIT 1"
        return bool(self._rows(sql, (node_id, node_capture_id)))

    def set_with_image(self, node_id: str, sha256: str) -> str | None:
        """The set holding this node's image with that checksum, if any."""
        sql = "SELECT set_id FROM owed_images WHERE node_id = ? AND sha256 = ? LIMIT 1"
        rows = self._rows(sql, (node_id, sha256))
        return str(rows[0][0]) if rows else None

    def ok_result(self, set_id: str, node_id: str) -> CaptureResult | None:
        """The node's ok result recorded in the set, if any."""
        sql = (
            "SELECT result_json FROM node_results"
            " WHERE set_id = ? AND node_id = ? AND status = 'ok'"
        )
        rows = self._rows(sql, (set_id, node_id))
        return CaptureResult.model_validate_json(str(rows[0][0])) if rows else None

    def relocate(self, set_id: str, node_id: str, node_capture_id: str) -> None:
        """The node now stores this set's capture under ``node_capture_id`` (renamed aside)."""
        with self._tx() as db:
            for table in ("node_results", "owed_images"):
                db.execute(
                    f"UPDATE {table} SET node_capture_id = ? WHERE set_id = ? AND node_id = ?",
                    (node_capture_id, set_id, node_id),
                )

    def free_set_id(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3`` … : the first set id not in the ledger."""
        taken = {str(r[0]) for r in self._rows(
            "SELECT set_id FROM capture_sets WHERE set_id = ? OR set_id LIKE ?",
            (base, base[:60] + "-%"),
        )}  # fmt: skip
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base[:60]}-{n}", n + 1
        return candidate

    def mark_released(self, set_id: str, node_id: str, error: str | None = None) -> None:
        """Record a release call: done, or failed with ``error`` (retried later)."""
        self._run(_RELEASED, (error, error, self._clock(), set_id, node_id))

    def list_sets(self, limit: int = 50, offset: int = 0) -> list[SetRecord]:
        """Sets, newest trigger first."""
        sql = f"SELECT {_SET_COLUMNS} {_SETS_NEWEST} LIMIT ? OFFSET ?"
        return [_set_record(r) for r in self._rows(sql, (limit, offset))]

    def get_set(self, set_id: str) -> SetDetail | None:
        """One set with its results and images, or None."""
        rows = self._rows(
            f"SELECT {_SET_COLUMNS} FROM capture_sets s WHERE s.set_id = ?", (set_id,)
        )
        if not rows:
            return None
        results = self._rows(_RESULTS_OF_SET, (set_id,))
        sql = f"SELECT {_IMAGE_COLUMNS} FROM owed_images WHERE set_id = ? ORDER BY node_id, camera"
        images = self._rows(sql, (set_id,))
        return SetDetail(
            _set_record(rows[0]),
            tuple(
                ResultRecord(r[0], r[1], r[2], CaptureResult.model_validate_json(r[3]), *r[4:])  # type: ignore[arg-type]
                for r in results
            ),
            tuple(_image(r) for r in images),
        )


def _image(row: tuple[object, ...]) -> OwedImage:
    values = list(row)
    values[9] = ImageState(str(values[9]))
    return OwedImage(*values)  # type: ignore[arg-type]


def _set_record(row: tuple[object, ...]) -> SetRecord:
    values = list(row)
    values[5] = tuple(json.loads(str(values[5])))
    values[14] = json.loads(str(values[14]))
    return SetRecord(*values)  # type: ignore[arg-type]
