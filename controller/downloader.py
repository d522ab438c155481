"""Download orchestration: what nodes owe, several nodes in parallel, manifests, releases."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pepi_fleet.controller.idle_clients import IDLE_LIMIT, IdleClients
from pepi_fleet.controller.ledger import ImageState, Ledger
from pepi_fleet.controller.manifest import ClockOf, write_manifest
from pepi_fleet.controller.node_client import (
    Endpoint,
    NodeClient,
    NodeClientFactory,
    RetrievalError,
)
from pepi_fleet.controller.retrieval import Cursor, ImageFetcher, sha256_of
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.core.atomic import fsync_dir
from pepi_fleet.schemas import PepiError

logger = logging.getLogger(__name__)

RECONCILE_EVERY_S = 60.0
"""How often an online node's list of held captures is checked against the ledger..."""
RECONCILE_BUDGET_PER_S = 2.0
"""...within this many lists a second for the whole fleet: 1000 nodes are checked each every
500 s, not 1000 every minute (a node coming online is checked at once, whatever the fleet)."""
ORPHAN_GRACE_S = 30.0
"""A held capture younger than this may still have its MQTT result on the way..."""
LISTEN_MARGIN_S = 0.5
"""...unless it fired this long before the controller's MQTT session began (clock offsets)."""
MANIFEST_BATCH_S = 1.0
"""While a set's images arrive its manifest is rewritten at most this often (and at once when
the last one is in): a set of 1000 nodes is written a few times, not once per node..."""
MANIFESTS_REMEMBERED = 256
"""Sets whose last manifest write is remembered (what it covered, when)."""
MANIFEST_SHARE = 0.05
"""...and no more often than keeps such writes under this share of the time (a big set's
manifest takes longer to build)."""


@dataclass(frozen=True)
class _Written:
    """What a set's manifest on disk holds."""

    at: float  # time.monotonic() of the write
    took: float  # seconds the write took
    covered: frozenset[str]  # nodes every image of which it lists as verified
    key: tuple[object, ...]  # the ledger's ``manifest_key`` it was built from
    unclocked: frozenset[str] = frozenset()  # answering nodes whose clock was not yet measured

    def recent(self) -> bool:
        """Written too lately to be written again for new images yet."""
        wait = max(MANIFEST_BATCH_S, self.took / MANIFEST_SHARE)
        return time.monotonic() - self.at < wait


class DownloadPassError(PepiError):
    """A download pass stopped on an unexpected error; names the node and the capture."""

    def __init__(self, node_id: str, capture_id: str | None, cause: BaseException) -> None:
        at = f"at capture {capture_id}" if capture_id else "before reaching a capture"
        super().__init__(f"download pass for node {node_id} failed {at}: {cause!r}")
        self.node_id = node_id
        self.capture_id = capture_id


class Downloader:
    """Fetches what nodes owe, writes manifests, then releases captures on the nodes.

    Idempotent: a file already on disk with the expected sha256 counts as done
    without a refetch, and a pass with nothing owed does nothing. One pass per
    node at a time; different nodes run in parallel on a bounded pool. Nodes are
    reached through ``node_clients`` (Thrift unless a test brings its own).
    """

    def __init__(
        self,
        ledger: Ledger,
        data_dir: Path,
        endpoint_of: Callable[[str], Endpoint | None],
        node_clients: NodeClientFactory = ThriftNodeClient,
        workers: int = 8,
        clock: Callable[[], float] = time.time,
        clock_of: ClockOf | None = None,
        listening_since: Callable[[], float | None] = lambda: None,
        idle_clients: int = IDLE_LIMIT,
    ) -> None:
        self._ledger = ledger
        self._listening_since = listening_since
        self.clock_of = clock_of
        self._manifest_lock = threading.Lock()
        # newest last; bounded: a set forgotten here costs at most one more write
        self._manifests: OrderedDict[str, _Written] = OrderedDict()
        self._dirty: set[str] = set()  # sets with images verified since their last manifest
        self._flushing = False
        self._data_dir = data_dir
        self._endpoint_of = endpoint_of
        self._node_clients = node_clients
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
        self._idle = IdleClients(idle_clients)
        self._busy: set[str] = set()
        self._again: dict[str, bool] = {}  # node -> force: work that arrived during its pass
        # node -> its queued pass and whether it is forced: a burst of submits (a result, the
        # retry sweep) for a node whose pass has not started yet queues no second pass
        self._waiting: dict[str, tuple[Future[None], bool]] = {}
        self._busy_lock = threading.Lock()
        self._jobs = 0  # queued or running passes, settling included
        self._quiet = threading.Condition(self._busy_lock)
        self._reconciled: dict[str, float] = {}  # node -> when its held captures were listed
        self.recovered: queue.Queue[str] = queue.Queue()
        """Sets recorded from captures a node held that the ledger did not know."""

    def remove_partial_files(self) -> int:
        """Delete temp files a killed controller left half-written (``<set>/.*.part``)."""
        removed = 0
        for leftover in self._data_dir.glob("*/.*.part"):
            leftover.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.info("removed %d half-written files of a previous run", removed)
        return removed

    def submit(self, node_id: str, *, force: bool = False) -> Future[None]:
        """Run ``download_owed`` on the pool (e.g. when a node comes back online).

        The future resolves once the pass's images are durable in place and marked done in
        the ledger (or the pass failed); the set's manifest and the node's release follow in
        the same job, off that path (a release is node-side cleanup: it waits for nothing the
        controller needs). A pass that fails is logged, with the node and capture, when it ends.
        """
        with self._busy_lock:
            waiting = self._waiting.get(node_id)
            if waiting is not None:  # a pass for the node is queued and not started yet:
                self._waiting[node_id] = (waiting[0], waiting[1] or force)  # it does this too
                return waiting[0]
            future: Future[None] = Future()
            # Under the lock until noted: the pass cannot look itself up before that.
            self._waiting[node_id] = (future, force)
            self._pool.submit(self._queued_pass, node_id, future)
            self._jobs += 1
        return future

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until no submitted pass is queued or running (its manifest and release
        included); False if ``timeout`` ran out first."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._jobs == 0, timeout)

    def _queued_pass(self, node_id: str, future: Future[None]) -> None:
        try:
            self._run_queued(node_id, future)
        finally:
            with self._quiet:
                self._jobs -= 1
                self._quiet.notify_all()

    def _run_queued(self, node_id: str, future: Future[None]) -> None:
        with self._busy_lock:
            _, force = self._waiting.pop(node_id)
        try:
            self.download_owed(node_id, force=force, durable=partial(_resolve, future))
        except BaseException as exc:
            _log_failure(node_id, exc)
            if not future.done():  # else it failed while settling, after its images were in
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        _resolve(future)

    def download_owed(
        self, node_id: str, *, force: bool = False, durable: Callable[[], object] | None = None
    ) -> None:
        """Fetch what ``node_id`` owes, then write manifests and release what is verified.

        ``force`` ignores the back-off of failed images (the node just came back). ``durable``
        is called once what the pass fetched is durable and marked done, before manifests
        and releases. Raises DownloadPassError if the pass stops on an unexpected error.
        """
        with self._busy_lock:
            if node_id in self._busy:
                # The running pass goes round once more: work that arrived during it must
                # not wait for the next retry sweep.
                self._again[node_id] = self._again.get(node_id, False) or force
                return
            self._busy.add(node_id)
        cursor = Cursor()
        try:
            while True:
                self._download(node_id, force, cursor, durable)
                with self._busy_lock:
                    if node_id not in self._again:
                        self._busy.discard(node_id)
                        return
                    force = self._again.pop(node_id)
        except BaseException as exc:
            with self._busy_lock:
                self._busy.discard(node_id)
                self._again.pop(node_id, None)
            if isinstance(exc, Exception):
                raise DownloadPassError(node_id, cursor.capture_id, exc) from exc
            raise

    def reconcile_due(self, node_id: str) -> bool:
        """Whether the node's held captures have not been checked for a while."""
        return self._clock() - self._reconciled.get(node_id, float("-inf")) >= self._period()

    def reconcile_next(self, online: Iterable[str], limit: int) -> list[str]:
        """Up to ``limit`` of the ``online`` nodes due for a check, longest unchecked first."""
        now, period = self._clock(), self._period()
        last = self._reconciled
        due = [n for n in online if now - last.get(n, float("-inf")) >= period]
        return sorted(due, key=lambda n: last.get(n, float("-inf")))[:limit]

    def _period(self) -> float:
        return max(RECONCILE_EVERY_S, len(self._reconciled) / RECONCILE_BUDGET_PER_S)

    def _reconcile(self, node_id: str, client: NodeClient, cursor: Cursor) -> None:
        """Record captures the node holds but the ledger does not know, so none is lost.

        They are results the controller never saw: taken while it was down (a clean MQTT
        session queues nothing for it), or whose result was lost with a killed controller.
        """
        now = self._clock()
        self._reconciled[node_id] = now
        try:
            held = client.list_captures()
        except RetrievalError as exc:
            logger.warning("cannot list what node %s holds: %s", node_id, exc)
            return
        # Results of captures fired before this MQTT session began never reach us; later
        # ones may still be on the way for a while.
        cutoff = now - ORPHAN_GRACE_S
        if (since := self._listening_since()) is not None:
            cutoff = max(cutoff, since - LISTEN_MARGIN_S)
        for result in held:
            cid = cursor.capture_id = result.capture_id
            if cid is None or self._ledger.knows_capture(node_id, cid):
                continue
            if (result.fired_at or result.received_at) > cutoff:
                continue
            first = result.frames[0].sha256 if result.frames else None
            known = None if first is None else self._ledger.set_with_image(node_id, first)
            if known is not None:
                # Renamed aside on the node (a PEPI client re-used the code): same capture.
                self._ledger.relocate(known, node_id, cid)
                logger.info("node %s holds set %s's capture as %s now", node_id, known, cid)
                continue
            set_id = cid
            if self._ledger.ok_result(set_id, node_id) is not None:
                set_id = self._ledger.free_set_id(cid)
            self._ledger.record_result(set_id, result)
            self.recovered.put(set_id)
            logger.info("node %s holds %s, unknown to the ledger: set %s", node_id, cid, set_id)

    def _download(
        self, node_id: str, force: bool, cursor: Cursor, durable: Callable[[], object] | None
    ) -> None:
        endpoint = self._endpoint_of(node_id)
        client = None
        if endpoint is not None:
            client = self._idle.take(node_id, endpoint)
            if client is None:
                client = self._node_clients(node_id, endpoint)
        ended = False
        try:
            if client is not None and (force or self.reconcile_due(node_id)):
                self._reconcile(node_id, client, cursor)
            touched: set[str] = set()
            missing = []
            for row in self._ledger.owed_by(node_id, None if force else self._clock()):
                cursor.capture_id = row.node_capture_id
                path = self._data_dir / row.path
                if sha256_of(path) == row.sha256:
                    # a pass killed after renaming it into place, before marking it
                    fsync_dir(path.parent)
                    self._ledger.mark_done(row.id)
                    touched.add(row.set_id)
                else:
                    missing.append(row)
            if client is not None and missing:
                fetcher = ImageFetcher(client, self._data_dir, self._ledger, self._clock, cursor)
                report = fetcher.fetch(missing)
                touched |= {row.set_id for row in missing if row.id in report.done}
            if durable is not None:
                durable()
            for set_id in sorted(touched):
                cursor.capture_id = set_id
                self._progress(set_id)
            if client is not None:
                self._release(node_id, client, cursor)
            ended = True
        finally:
            if client is not None and endpoint is not None:
                if ended:  # its connection is usable, or closed after a failure: kept
                    self._idle.give_back(node_id, endpoint, client)
                else:  # stopped mid-call: in no known state
                    client.close()

    def _release(self, node_id: str, client: NodeClient, cursor: Cursor) -> None:
        for set_id, node_capture_id in self._ledger.releasable(node_id):
            cursor.capture_id = node_capture_id
            # The copy must be on record in the set's manifest before the node forgets it.
            if not self._covers(set_id, node_id):
                continue  # the set's next (batched) manifest covers it; released after that
            result = self._ledger.ok_result(set_id, node_id)
            expected = {} if result is None else {f.camera: f.sha256 for f in result.frames}
            try:
                released = client.release_matching(node_capture_id, expected)
            except RetrievalError as exc:
                self._ledger.mark_released(set_id, node_id, error=str(exc))
                logger.warning("release on node %s failed, will retry: %s", node_id, exc)
                return
            self._ledger.mark_released(set_id, node_id)
            if released is None:
                logger.info("node %s no longer held %s", node_id, node_capture_id)

    # -- manifests ------------------------------------------------------------------------------

    def _progress(self, set_id: str) -> None:
        """Images of the set were verified: rewrite its manifest now, or mark it for the next
        batch if it was written moments ago and still waits for images."""
        with self._manifest_lock:
            written = self._manifests.get(set_id)
            if written is not None and written.key == self._ledger.manifest_key(set_id):
                return  # a pass that finished meanwhile wrote what this one would
            if written is not None and written.recent() and not self._ledger.all_downloaded(set_id):
                self._dirty.add(set_id)
                return
            self._write_manifest(set_id)

    def _covers(self, set_id: str, node_id: str) -> bool:
        """Whether the set's manifest on disk lists all of the node's images as verified;
        writes it first unless it was written moments ago (then the next batch will)."""
        with self._manifest_lock:
            written = self._manifests.get(set_id)
            if written is not None and node_id in written.covered:
                return True
            if written is not None and written.recent():
                self._dirty.add(set_id)
                return False
            self._write_manifest(set_id)
            written = self._manifests.get(set_id)
            return written is not None and node_id in written.covered

    def clock_known(self, node_id: str) -> None:
        """A node's clock offset was measured for the first time: the manifests written
        without it are rewritten by the next batch (a restarted controller's, typically)."""
        with self._manifest_lock:
            for set_id, written in self._manifests.items():
                if node_id in written.unclocked:
                    self._dirty.add(set_id)

    def flush_manifests(self) -> None:
        """Write, on the pool, the manifests left for a batch whose interval has passed (the
        controller calls this on its timer); captures they cover are released by the next
        pass of their node (the retry sweep's)."""
        with self._manifest_lock:
            if self._flushing:
                return
            due = [s for s in self._dirty if not self._manifests[s].recent()]
            if not due:
                return
            self._flushing = True
        future = self._pool.submit(self._flush, sorted(due))
        future.add_done_callback(_log_flush_failure)

    def _flush(self, set_ids: list[str]) -> None:
        try:
            for set_id in set_ids:
                with self._manifest_lock:
                    if set_id in self._dirty:
                        self._write_manifest(set_id)
        finally:
            with self._manifest_lock:
                self._flushing = False

    def ensure_manifest(self, set_id: str) -> None:
        """Write the set's manifest unless the one on disk already holds what the ledger
        does (a summary after the last download needs no second write of 1000 nodes)."""
        with self._manifest_lock:
            written = self._manifests.get(set_id)
            if written is None or written.key != self._ledger.manifest_key(set_id):
                self._write_manifest(set_id)

    def write_manifest(self, set_id: str) -> Path | None:
        """(Re)write a set's manifest from the ledger; None if the set is unknown."""
        # Passes for different nodes finish together: the last writer must have read last.
        with self._manifest_lock:
            return self._write_manifest(set_id)

    def _write_manifest(self, set_id: str) -> Path | None:
        began = time.monotonic()
        key = self._ledger.manifest_key(set_id)
        detail = self._ledger.get_set(set_id)
        if detail is None:
            return None
        path = write_manifest(self._data_dir, detail, self._clock(), self.clock_of)
        owing = {i.node_id for i in detail.images if i.state is not ImageState.DONE}
        covered = frozenset(r.node_id for r in detail.results) - owing
        done = time.monotonic()
        unclocked = frozenset(
            r.node_id
            for r in detail.results
            if self.clock_of is not None and self.clock_of(r.node_id) is None
        )
        self._manifests[set_id] = _Written(done, done - began, covered, key, unclocked)
        self._manifests.move_to_end(set_id)
        while len(self._manifests) > MANIFESTS_REMEMBERED:
            forgotten, _ = self._manifests.popitem(last=False)
            self._dirty.discard(forgotten)
        self._dirty.discard(set_id)
        self._ledger.mark_manifest_written(set_id)
        return path

    def close(self) -> None:
        """Wait for running passes, stop the pool and close the connections kept idle."""
        self._pool.shutdown(wait=True)
        self._idle.close()


def _resolve(future: Future[None]) -> None:
    """The pass's images are durable and recorded: whoever waits for the pass may go on."""
    if not future.done():
        future.set_result(None)


def _log_flush_failure(future: Future[None]) -> None:
    exc = None if future.cancelled() else future.exception()
    if exc is not None:
        _log_failure("(manifest batch)", exc)


def _log_failure(node_id: str, exc: BaseException) -> None:
    """A queued pass failed: its exception is logged (nobody need wait for it)."""
    if isinstance(exc, DownloadPassError):
        logger.error("%s", exc, exc_info=exc)
    else:
        logger.error("download pass for node %s failed: %r", node_id, exc, exc_info=exc)
