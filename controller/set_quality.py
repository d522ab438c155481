"""Whether a capture set is whole and synchronous: missing nodes and cameras, late firers."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus

DEFAULT_FIRE_TOLERANCE_S = 0.1
"""How far a node's ``fired_at`` may lie from the set's reference before it is an outlier:
wide enough for an immediate broadcast over Wi-Fi (tens of ms), far below a frame-time
gone wrong (a trigger delivered seconds late after a network cut)."""


@dataclass(frozen=True)
class Assessment:
    """What a set lacks; ``complete`` only when it lacks nothing."""

    missing: list[str] = field(default_factory=list)  # expected, never answered
    failed: list[str] = field(default_factory=list)  # answered, but not ok
    outliers: list[str] = field(default_factory=list)  # fired outside the tolerance
    short: dict[str, list[int]] = field(default_factory=dict)  # node -> cameras not delivered
    offsets: dict[str, float] = field(default_factory=dict)  # fired_at - reference, per node
    late: list[str] = field(default_factory=list)  # scheduled: received the trigger after ``at``
    problems: list[str] = field(default_factory=list)  # one line each, for people

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed or self.outliers or self.short)


def assess(
    expected: Iterable[str],
    results: Mapping[str, CaptureResult],
    *,
    at: float | None = None,
    tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
    cameras: Mapping[str, Sequence[int]] | None = None,
    unreachable: Iterable[str] = (),
) -> Assessment:
    """Judge one set from each node's kept result.

    ``unreachable``: nodes the trigger could not reach (their site's bridge was down), not
    waited for but missing all the same, unless they answered after all.

    The reference time is ``at`` for a scheduled set (each node should fire then on its own
    clock), else the median ``fired_at`` of the nodes that fired. ``cameras``: the camera
    indexes each node was expected to deliver, where known.
    """
    expected = sorted(set(expected))
    ok = {n: r for n, r in results.items() if r.status is CaptureStatus.OK}
    a = Assessment()
    cut_off = sorted(set(unreachable) - set(expected) - set(results))
    if not expected and not results and not cut_off:
        a.problems.append("no node was online to capture")
    for node in expected:
        if node not in results:
            a.missing.append(node)
            a.problems.append(f"{node} never answered")
    for node in cut_off:
        a.missing.append(node)
        a.problems.append(f"{node} was unreachable (its site's bridge was down): not triggered")
    for node in sorted(results):
        result = results[node]
        if result.status is not CaptureStatus.OK:
            a.failed.append(node)
            reason = f": {result.error}" if result.error else ""
            a.problems.append(f"{node} answered {result.status}{reason}")
    if at is not None:
        a.late.extend(n for n in sorted(results) if armed_late(results[n], at))
    fired = {n: r.fired_at for n, r in ok.items() if r.fired_at is not None}
    if fired:
        reference = at if at is not None else statistics.median(fired.values())
        what = "the scheduled time" if at is not None else "the set's median"
        for node in sorted(fired):
            offset = fired[node] - reference
            a.offsets[node] = offset
            if abs(offset) > tolerance_s:
                a.outliers.append(node)
                side = "after" if offset > 0 else "before"
                a.problems.append(
                    f"{node} fired {abs(offset):.3f} s {side} {what} "
                    f"(tolerance {tolerance_s:.3f} s)"
                )
    for node in sorted(ok):
        wanted = (cameras or {}).get(node)
        if not wanted:
            continue
        got = {f.camera for f in ok[node].frames}
        absent = [c for c in wanted if c not in got]
        if absent:
            a.short[node] = absent
            listed = ", ".join(str(c) for c in absent)
            a.problems.append(f"{node} delivered no image of camera {listed}")
    return a


def armed_late(result: CaptureResult, at: float) -> bool:
    """Whether a node got a scheduled trigger too late to arm before ``at``: it answered
    ``late`` (not fired), or received the trigger after ``at`` on its own clock (and fired
    on receipt, behind the others)."""
    if result.status is CaptureStatus.LATE:
        return True
    if result.status is not CaptureStatus.OK:
        return False
    return result.received_at > (result.at if result.at is not None else at)
