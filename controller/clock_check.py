"""Which nodes' clocks are too far from the controller's for a scheduled capture."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pepi_fleet.controller.clock_probe import ClockEstimate

EstimateOf = Callable[[str], ClockEstimate | None]
"""node id -> its measured clock estimate, if any (``ClockBook.estimate``)."""


def clock_warnings(
    node_ids: Iterable[str], estimate_of: EstimateOf, tolerance_s: float
) -> list[str]:
    """One line per node whose |offset| plus its uncertainty exceeds ``tolerance_s``,
    or whose offset is not measured; sorted by node id, empty when all are in sync.

    A node at ``at`` on its own clock fires ``offset`` away from the controller's ``at``;
    the uncertainty (half the best round trip) is added because the offset may be off by
    that much, so a warning is given whenever the node *may* be outside the tolerance.
    """
    warnings = []
    for node_id in sorted(set(node_ids)):
        est = estimate_of(node_id)
        if est is None:
            warnings.append(f"{node_id}: clock offset not measured yet")
        elif abs(est.offset_s) + est.uncertainty_s > tolerance_s:
            warnings.append(
                f"{node_id}: clock offset {est.offset_s * 1000:+.3f} ms "
                f"(± {est.uncertainty_s * 1000:.3f} ms) exceeds {tolerance_s * 1000:.3f} ms"
            )
    return warnings
