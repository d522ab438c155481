"""A clock the test moves by hand, for the parts that take an injected clock (and sleep)."""

from __future__ import annotations

T0 = 1_763_712_000.0  # 2025-11-21T08:00:00Z


class ManualClock:
    """Time moves only when the test says so (``clock.now = t``, ``clock.advance(s)``) or
    when the code under test sleeps with ``clock.sleep`` (each sleep kept in ``sleeps``)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
