"""Pure timing decisions for a capture command: fire now, fire at ``at``, or refuse as late."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pepi_fleet.schemas.capture import DEFAULT_SCHEDULE_HORIZON_S, schedule_too_far_ahead

DEFAULT_LATE_TOLERANCE_S = 0.5
SPIN_BEFORE_S = 0.002
"""How long before ``at`` the scheduler stops sleeping and spins (sleep wakes up late)."""


@dataclass(frozen=True)
class Fire:
    """Fire at ``fire_at`` on this node's clock (== receipt time for immediate captures)."""

    fire_at: float


@dataclass(frozen=True)
class Late:
    """Do not fire; the result says why."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """Do not fire: the command cannot be honoured (an ``error`` result says why)."""

    reason: str


Decision = Fire | Late | Refused


def decide(
    *,
    at: float | None,
    received_at: float,
    now: float,
    late_tolerance_s: float,
    expires_at: float | None = None,
    retained: bool = False,
    horizon_s: float = DEFAULT_SCHEDULE_HORIZON_S,
) -> Decision:
    """What to do with a command received at ``received_at``, evaluated at ``now``."""
    if retained:
        return Late(
            "retained trigger ignored: a retained capture would re-fire on every reconnect "
            "(clearing one with an empty retained message is not a trigger either); "
            "publish triggers without -r"
        )
    if at is not None and not math.isfinite(at):
        return Refused(f"'at' must be a finite number of Unix seconds, got {at!r}")
    too_far = schedule_too_far_ahead(at, now, horizon_s)
    if too_far is not None:
        return Refused(too_far)
    late = still_on_time(at=at, now=now, late_tolerance_s=late_tolerance_s, expires_at=expires_at)
    if late is not None:
        return late
    return Fire(fire_at=now if at is None else max(at, now))


def still_on_time(
    *, at: float | None, now: float, late_tolerance_s: float, expires_at: float | None
) -> Late | None:
    """Re-check just before firing (a queued or delayed command may have gone stale)."""
    if expires_at is not None and now > expires_at:
        return Late(f"MQTT message expiry ran out {now - expires_at:.3f} s before firing")
    if at is not None and now - at > late_tolerance_s:
        return Late(
            f"'at' was {now - at:.3f} s in the past (tolerance {late_tolerance_s} s); "
            "check the sender's clock or schedule further ahead"
        )
    return None
