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
    unreachable: dict[str, list[str]] = field(default_factory=dict)  # site -> nodes cut off
    problems: list[str] = field(default_factory=list)  # one line each, for people

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed or self.outliers or self.short or self.unreachable)


def by_site(unreachable: Mapping[str, str]) -> dict[str, list[str]]:
    """node -> site as site -> its nodes, both sorted (how sets name the nodes cut off)."""
    sites: dict[str, list[str]] = {}
    for node in sorted(unreachable):
        sites.setdefault(unreachable[node], []).append(node)
    return dict(sorted(sites.items()))


def assess(
    expected: Iterable[str],
    results: Mapping[str, CaptureResult],
    *,
    at: float | None = None,
    tolerance_s: float = DEFAULT_FIRE_TOLERANCE_S,
    cameras: Mapping[str, Sequence[int]] | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> Assessment:
    """Judge one set from each node's kept result.

    ``unreachable``: node -> site of the nodes the trigger could not reach (their site's
    bridge was down): not waited for, and named per site apart from the ``missing`` (a site
    cut off is one problem, not one per node), unless they answered after all.

    The reference time is ``at`` for a scheduled set (each node should fire then on its own
    clock), else the median ``fired_at`` of the nodes that fired. ``cameras``: the camera
    indexes each node was expected to deliver, where known.
    """
    expected = sorted(set(expected))
    ok = {n: r for n, r in results.items() if r.status is CaptureStatus.OK}
    a = Assessment()
    answered = set(expected) | set(results)
    cut_off = {n: s for n, s in (unreachable or {}).items() if n not in answered}
    a.unreachable.update(by_site(cut_off))
    if not expected and not results and not cut_off:
        a.problems.append("no node was online to capture")
    for node in expected:
        if node not in results:
            a.missing.append(node)
            a.problems.append(f"{node} never answered")
    for site, nodes in a.unreachable.items():
        a.problems.append(
            f"site {site} was cut off (its bridge was down): {', '.join(nodes)} not triggered"
        )
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
