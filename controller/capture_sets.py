"""Capture-set assembly: triggers and node results become sets, pure with an injected clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S, Assessment, assess
from pepi_fleet.schemas import (
    CaptureResult,
    CaptureSetSummary,
    CaptureStatus,
    NodeOutcome,
    auto_capture_id,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
WINDOW_BEFORE_S = 2.0
WINDOW_AFTER_S = 5.0
KEEP_COMPLETED_S = 3600.0
AUTO_PREFIX = "auto-"


class SetKind(StrEnum):
    """How a set came to be."""

    EXPLICIT = "explicit"  # a trigger carrying a capture id
    AUTO = "auto"  # an id-less trigger; claims nodes' auto-… results by receipt time
    ORPHAN = "orphan"  # a result no open set accounted for (Thrift start_capture, missed trigger)


@dataclass(frozen=True)
class NodePart:
    """One node's answer in a set; ``node_capture_id`` is what to fetch and release on the node."""

    node_id: str
    node_capture_id: str
    result: CaptureResult
    received_at: float


@dataclass(frozen=True)
class CaptureSetView:
    """Snapshot of one capture set."""

    set_id: str
    kind: SetKind
    triggered_at: float
    at: float | None
    expected: frozenset[str]
    target_node: str | None
    deadline: float
    completed_at: float | None
    parts: tuple[NodePart, ...]
    cameras: Mapping[str, tuple[int, ...]] | None = None  # per node, where known at trigger
    unreachable: Mapping[str, str] = field(default_factory=dict)
    """node -> site of the nodes the trigger could not reach (their site's bridge was
    down): not waited for, named per site in the summary."""

    @property
    def answered(self) -> frozenset[str]:
        """Nodes that sent any result (ok or not)."""
        return frozenset(p.node_id for p in self.parts)

    @property
    def spread_s(self) -> float | None:
        """max - min frame timestamp over every node and camera; None without frames."""
        return _spread(f.timestamp for p in self.parts for f in p.result.frames)

    @property
    def fired_spread_s(self) -> float | None:
        """max - min ``fired_at`` over the nodes that fired."""
        return _spread(p.result.fired_at for p in self.parts if p.result.fired_at is not None)

    def summary(
        self, completed_at: float, fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S
    ) -> CaptureSetSummary:
        """The payload published on ``controller/captures``."""
        return build_summary(
            self.set_id,
            self.triggered_at,
            completed_at,
            self.expected,
            {p.node_id: p.result for p in self.parts},
            self.spread_s,
            self.fired_spread_s,
            at=self.at,
            fire_tolerance_s=fire_tolerance_s,
            cameras=self.cameras,
            unreachable=self.unreachable,
        )


def build_summary(
    set_id: str,
    triggered_at: float,
    completed_at: float,
    expected: Iterable[str],
    results: Mapping[str, CaptureResult],
    spread_s: float | None,
    fired_spread_s: float | None,
    *,
    at: float | None = None,
    fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
    cameras: Mapping[str, Sequence[int]] | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> CaptureSetSummary:
    """A set's summary from each node's (kept) result; also used to rebuild it from the ledger.

    ``complete`` only when every expected node delivered every camera within the tolerance
    (see ``set_quality.assess``); ``problems`` says what an incomplete set lacks.
    """
    expected = frozenset(expected)
    verdict = assess(
        expected,
        results,
        at=at,
        tolerance_s=fire_tolerance_s,
        cameras=cameras,
        unreachable=unreachable,
    )
    cut_off = {n for nodes in verdict.unreachable.values() for n in nodes}
    named = expected | results.keys() | set(verdict.missing) | cut_off
    outcomes = [_outcome(n, results.get(n), verdict) for n in sorted(named)]
    return CaptureSetSummary(
        capture_id=set_id,
        triggered_at=triggered_at,
        completed_at=completed_at,
        expected=sorted(expected),
        outcomes=outcomes,
        spread_s=spread_s,
        fired_spread_s=fired_spread_s,
        complete=bool(expected) and verdict.complete,
        missing=verdict.missing,
        unreachable=verdict.unreachable,
        outliers=verdict.outliers,
        late_nodes=verdict.late,
        fire_tolerance_s=fire_tolerance_s,
        problems=verdict.problems,
    )


@dataclass(frozen=True)
class Assignment:
    """Where ``add_result`` put a result."""

    set_id: str
    node_id: str
    node_capture_id: str
    opened: bool  # an orphan set was opened for it


@dataclass
class _Set:
    view: CaptureSetView
    auto_ref: float | None  # receipt-time reference for claiming auto-… results
    parts: dict[str, NodePart] = field(default_factory=dict)
    origin: str | None = None  # an orphan set: the node capture id that opened it
    earlier_run: bool = False  # the id names a set an earlier run recorded (the ledger merges)


def _outcome(node_id: str, r: CaptureResult | None, verdict: Assessment) -> NodeOutcome:
    if r is None:
        return NodeOutcome(node_id=node_id, status=None)
    return NodeOutcome(
        node_id=node_id,
        status=r.status,
        frames=len(r.frames),
        error=r.error,
        fired_at=r.fired_at,
        fire_offset_s=verdict.offsets.get(node_id),
        outlier=node_id in verdict.outliers,
    )


def _spread(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) - min(present) if present else None


class CaptureSetBook:
    """Opens sets for triggers, files results into them, completes them on answers or timeout.

    Thread-safe but otherwise pure: no I/O, time only from the injected clock.
    ``tick()`` returns each completed set's summary exactly once.

    A capture id is an idempotency key, but a node may still capture again under an id a set
    already holds (PEPI's Thrift ``start_capture`` re-captures; a node that lost its memory
    of ids). Such results are grouped by receipt time into one new set per trigger, never
    one set per node. ``known_set`` tells which set ids an earlier run already used, and
    ``held_before(set_id, result)`` whether such a set holds another ok capture of that node.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        window_before_s: float = WINDOW_BEFORE_S,
        window_after_s: float = WINDOW_AFTER_S,
        keep_completed_s: float = KEEP_COMPLETED_S,
        fire_tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
        known_set: Callable[[str], bool] = lambda _set_id: False,
        held_before: Callable[[str, CaptureResult], bool] = lambda _set_id, _result: False,
    ) -> None:
        self._clock = clock
        self._fire_tolerance_s = fire_tolerance_s
        self._known_set = known_set
        self._held_before = held_before
        self._timeout_s = timeout_s
        self._before = window_before_s
        self._after = window_after_s
        self._keep = keep_completed_s
        self._sets: dict[str, _Set] = {}
        self._by_node_capture: dict[tuple[str, str], str] = {}
        self._offsets: dict[str, float] = {}  # node receipt clock minus controller trigger clock
        self._unreported: list[CaptureSetSummary] = []
        self._lock = threading.Lock()

    def open_trigger(
        self,
        capture_id: str | None,
        expected: Iterable[str],
        triggered_at: float,
        target_node: str | None = None,
        *,
        at: float | None = None,
        cameras: Mapping[str, Sequence[int]] | None = None,
        unreachable: Mapping[str, str] | None = None,
    ) -> CaptureSetView:
        """Open (or, for a repeated explicit id, reopen) the set for one trigger.

        ``expected``: nodes online at trigger time; a per-node trigger expects only
        ``target_node``. ``unreachable``: node -> site of the nodes the trigger cannot reach
        (their site's bridge is down): not waited for, named apart. An id-less trigger gets
        ``auto-<UTC ms of triggered_at>``.
        """
        cut_off = dict(unreachable or {})
        if target_node:
            cut_off = {n: s for n, s in cut_off.items() if n == target_node}
        nodes = frozenset({target_node} if target_node else expected) - cut_off.keys()
        wanted = {n: tuple(c) for n, c in (cameras or {}).items() if n in nodes} or None
        deadline = max(triggered_at, at if at is not None else triggered_at) + self._timeout_s
        with self._lock:
            existing = self._sets.get(capture_id) if capture_id else None
            if existing is not None and existing.view.kind is not SetKind.AUTO:
                old = existing.view
                existing.view = replace(
                    old,
                    kind=SetKind.EXPLICIT,
                    at=at,
                    expected=old.expected | nodes,
                    target_node=target_node if old.target_node == target_node else None,
                    deadline=max(old.deadline, deadline),
                    completed_at=None,
                    cameras={**(old.cameras or {}), **(wanted or {})} or None,
                    unreachable={
                        n: s
                        for n, s in {**old.unreachable, **cut_off}.items()
                        if n not in old.expected | nodes
                    },
                )
                self._complete_if_answered(existing)
                return existing.view
            kind = SetKind.EXPLICIT if capture_id else SetKind.AUTO
            # An explicit id an earlier run used names the same set again (the ledger merges).
            set_id = capture_id if capture_id else self._unique(auto_capture_id(triggered_at))
            if capture_id and set_id in self._sets:  # an auto set of that name: keep apart
                set_id = self._unique(capture_id)
            view = CaptureSetView(
                set_id,
                kind,
                triggered_at,
                at,
                nodes,
                target_node,
                deadline,
                None,
                (),
                wanted,
                cut_off,
            )
            auto_ref = triggered_at if kind is SetKind.AUTO else None
            earlier = kind is SetKind.EXPLICIT and self._known_set(set_id)
            self._sets[set_id] = _Set(view, auto_ref, earlier_run=earlier)
            logger.debug("opened %s set %s expecting %s", kind, set_id, sorted(nodes))
            return view

    def add_result(self, result: CaptureResult, received_at: float) -> Assignment | None:
        """File one node result into its set, opening an orphan set if none fits.

        ``received_at`` is the controller's receive time. Returns None only for a
        result without a capture id (an unreadable command), which fits no set.
        """
        node_capture_id = result.capture_id
        if node_capture_id is None:
            return None
        node = result.node_id
        with self._lock:
            target, opened = self._find(result, node_capture_id), False
            if target is not None and (
                self._is_recapture(target, result)
                # only a set of an earlier run can hold what this run never saw
                or (target.earlier_run and self._held_before(target.view.set_id, result))
            ):
                target = None  # the node captured again under an id it no longer held
            if target is None:
                target, opened = self._open_orphan(result, node_capture_id, received_at), True
            self._record(target, NodePart(node, node_capture_id, result, received_at))
            self._complete_if_answered(target)
            return Assignment(target.view.set_id, node, node_capture_id, opened)

    def tick(self) -> list[CaptureSetSummary]:
        """Complete sets whose deadline passed, forget old ones; return new summaries."""
        now = self._clock()
        with self._lock:
            for entry in list(self._sets.values()):
                view = entry.view
                if view.completed_at is None and now >= view.deadline:
                    self._complete(entry)
                elif view.completed_at is not None and now - view.completed_at > self._keep:
                    self._forget(entry)
            summaries, self._unreported = self._unreported, []
            return summaries

    def get(self, set_id: str) -> CaptureSetView | None:
        """One set's snapshot (open, or completed within ``keep_completed_s``)."""
        with self._lock:
            entry = self._sets.get(set_id)
            return None if entry is None else entry.view

    def _find(self, result: CaptureResult, node_capture_id: str) -> _Set | None:
        known = self._by_node_capture.get((result.node_id, node_capture_id))
        if known is not None:
            return self._sets[known]
        exact = self._sets.get(node_capture_id)
        if exact is not None and exact.view.kind is SetKind.EXPLICIT:
            return exact
        if node_capture_id.startswith(AUTO_PREFIX) and result.source == "mqtt":
            claimed = self._claim_auto(result)
            if claimed is not None:
                return claimed
        # An auto set's name can equal a node's auto id (same ms) without claiming its result.
        return exact if exact is not None and exact.view.kind is SetKind.ORPHAN else None

    @staticmethod
    def _is_recapture(entry: _Set, result: CaptureResult) -> bool:
        previous = entry.parts.get(result.node_id)
        return (
            previous is not None
            and previous.result.status is CaptureStatus.OK
            and result.status is CaptureStatus.OK
            and previous.result.frames != result.frames
        )

    def _claim_auto(self, result: CaptureResult) -> _Set | None:
        node, t = result.node_id, result.received_at
        offset = self._offsets.get(node, 0.0)
        best: tuple[float, float, _Set] | None = None
        for entry in self._sets.values():
            ref = entry.auto_ref
            if ref is None or node in entry.parts or not self._in_window(t, ref):
                continue
            if entry.view.kind is SetKind.AUTO and node not in entry.view.expected:
                continue
            score = abs(t - offset - ref) if entry.view.kind is SetKind.AUTO else abs(t - ref)
            if best is None or (score, ref) < best[:2]:
                best = (score, ref, entry)
        if best is None:
            return None
        if best[2].view.kind is SetKind.AUTO:
            self._offsets[node] = t - best[1]
        return best[2]

    def _in_window(self, t: float, ref: float) -> bool:
        return ref - self._before <= t <= ref + self._after

    def _open_orphan(self, result: CaptureResult, node_capture_id: str, received_at: float) -> _Set:
        joined = self._orphan_to_join(result.node_id, node_capture_id, received_at)
        if joined is not None:
            logger.info(
                "result %s of node %s joins set %s (same trigger)",
                node_capture_id, result.node_id, joined.view.set_id,
            )  # fmt: skip
            return joined
        set_id = self._unique(node_capture_id)
        start = max(received_at, result.at or received_at)
        view = CaptureSetView(
            set_id, SetKind.ORPHAN, received_at, result.at, frozenset({result.node_id}),
            None, start + self._timeout_s, None, (),
        )  # fmt: skip
        auto_ref = result.received_at if node_capture_id.startswith(AUTO_PREFIX) else None
        entry = self._sets[set_id] = _Set(view, auto_ref, origin=node_capture_id)
        logger.info("result %s of node %s opened its own set", node_capture_id, result.node_id)
        return entry

    def _orphan_to_join(self, node: str, node_capture_id: str, received_at: float) -> _Set | None:
        """An orphan set opened by another node's result of the same id and trigger."""
        best: tuple[float, _Set] | None = None
        for entry in self._sets.values():
            if entry.origin != node_capture_id or node in entry.parts:
                continue
            if entry.view.completed_at is not None:
                continue
            if not self._in_window(received_at, entry.view.triggered_at):
                continue
            gap = abs(received_at - entry.view.triggered_at)
            if best is None or gap < best[0]:
                best = (gap, entry)
        return None if best is None else best[1]

    def _record(self, entry: _Set, part: NodePart) -> None:
        previous = entry.parts.get(part.node_id)
        if previous is not None and previous.result.status is CaptureStatus.OK:
            if part.node_capture_id != previous.node_capture_id or part.result != previous.result:
                logger.warning(
                    "set %s: keeping node %s's earlier ok result over a later %s",
                    entry.view.set_id, part.node_id, part.result.status,
                )  # fmt: skip
            return
        entry.parts[part.node_id] = part
        self._by_node_capture[(part.node_id, part.node_capture_id)] = entry.view.set_id
        expected = entry.view.expected
        if entry.view.kind is SetKind.ORPHAN:
            expected = expected | {part.node_id}
        entry.view = replace(entry.view, expected=expected, parts=tuple(entry.parts.values()))

    def _complete_if_answered(self, entry: _Set) -> None:
        view = entry.view
        if view.kind is SetKind.ORPHAN or view.completed_at is not None or not view.expected:
            return  # orphans and sets expecting no one gather results until the deadline
        # (the count first: the whole check once per result would be O(N) each, O(N²) a set)
        if len(entry.parts) >= len(view.expected) and view.expected <= entry.parts.keys():
            self._complete(entry)

    def _complete(self, entry: _Set) -> None:
        now = self._clock()
        entry.view = replace(entry.view, completed_at=now)
        self._unreported.append(entry.view.summary(now, self._fire_tolerance_s))
        logger.info("capture set %s complete", entry.view.set_id)

    def _forget(self, entry: _Set) -> None:
        del self._sets[entry.view.set_id]
        for part in entry.parts.values():
            self._by_node_capture.pop((part.node_id, part.node_capture_id), None)

    def _unique(self, base: str) -> str:
        def taken(set_id: str) -> bool:
            return set_id in self._sets or self._known_set(set_id)

        if not taken(base):
            return base
        n = 2
        while taken(f"{base[:60]}-{n}"):
            n += 1
        return f"{base[:60]}-{n}"  # stays a valid capture id (64 chars at most)
