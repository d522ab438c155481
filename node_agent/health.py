"""Self-health: are the node's workers alive and progressing? A pure verdict and a watchdog."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pepi_fleet.schemas.status import HEALTH_OK

logger = logging.getLogger(__name__)

FATAL_STALL_FACTOR = 4.0
"""A worker stalled this many times ``stall_s`` is as good as dead: the node exits."""
EXIT_UNHEALTHY = 70
"""Exit status of a node that stopped itself because an essential worker died (EX_SOFTWARE)."""


@dataclass(frozen=True)
class Vital:
    """What one worker shows the watchdog."""

    name: str
    alive: bool
    stalled_s: float = 0.0
    """How long work has waited without progress (0 when idle or progressing)."""


@dataclass(frozen=True)
class Health:
    """The node's verdict on itself."""

    summary: str = HEALTH_OK
    """``ok`` or ``degraded: <reasons>``, as published in ``NodeStatus.health``."""
    fatal: str | None = None
    """Set when the node cannot do its job any more and must exit to be restarted."""

    @property
    def ok(self) -> bool:
        return self.summary == HEALTH_OK


def assess(vitals: list[Vital], stall_s: float, notes: tuple[str, ...] = ()) -> Health:
    """The verdict on ``vitals``: dead or long-stalled workers are fatal, stalled ones degrade.

    ``notes`` are other reasons the node is degraded (e.g. another client uses its id).
    """
    dead = [f"{v.name} thread died" for v in vitals if not v.alive]
    stalled = [v for v in vitals if v.alive and v.stalled_s >= stall_s]
    fatal = dead + [
        f"{v.name} made no progress for {v.stalled_s:.0f} s"
        for v in stalled
        if v.stalled_s >= FATAL_STALL_FACTOR * stall_s
    ]
    reasons = [*dead, *(f"{v.name} no progress for {v.stalled_s:.0f} s" for v in stalled), *notes]
    if not reasons:
        return Health()
    return Health("degraded: " + "; ".join(reasons), "; ".join(fatal) or None)


class Watchdog:
    """Checks the workers every ``interval_s``; reports changes; calls ``on_fatal`` once."""

    def __init__(
        self,
        vitals: Callable[[], list[Vital]],
        stall_s: float,
        on_change: Callable[[Health], None],
        on_fatal: Callable[[str], None],
        notes: Callable[[], tuple[str, ...]] = tuple,
        interval_s: float = 1.0,
    ) -> None:
        self.stall_s = stall_s
        self.health = Health()
        self._vitals = vitals
        self._notes = notes
        self._on_change = on_change
        self._on_fatal = on_fatal
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def check(self) -> Health:
        """Assess now; report a change; True fatality ends the watch."""
        health = assess(self._vitals(), self.stall_s, self._notes())
        if health != self.health:
            if health.ok:
                logger.warning("node healthy again")
            else:
                logger.warning("node %s", health.summary)
            self.health = health
            self._on_change(health)
        return health

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._interval_s):
            try:
                health = self.check()
            except Exception:
                logger.exception("health check failed")
                continue
            if health.fatal is not None:
                logger.critical(
                    "node unhealthy after %.0f s: %s; stopping so that its supervisor restarts it",
                    time.monotonic() - started,
                    health.fatal,
                )
                self._on_fatal(health.fatal)
                return
