"""Connection slots for the node's servers: a cap, and who gives way when it is reached."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum

from pepi_fleet.core.mqtt_link import LogThrottle

logger = logging.getLogger(__name__)

FULL_LOG_INTERVAL_S = 30.0
EVICT_WAIT_S = 2.0
"""How long a newcomer waits for an evicted connection's thread to end."""


class Phase(Enum):
    """What a connection's thread is doing now."""

    READING = "reading"
    """Waiting for (the rest of) a request: the client owes us bytes. Idle keep-alive
    connections and slow-loris clients sit here; they give way at once."""
    WORKING = "working"
    """Serving a request (a capture being waited for, a frame being made): never evicted."""
    WRITING = "writing"
    """Sending to a client that may not read: gives way once stuck for the grace period."""


class Slot:
    """One admitted connection."""

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self.sock = sock
        self._clock = clock
        self.phase = Phase.READING
        self.since = clock()
        self.evicted = False
        """Hung up for a newcomer; the slot is free once its thread has ended."""

    def reading(self) -> None:
        self._enter(Phase.READING)

    def working(self) -> None:
        self._enter(Phase.WORKING)

    def writing(self) -> None:
        self._enter(Phase.WRITING)

    def _enter(self, phase: Phase) -> None:
        # two plain assignments: the admitting thread reads them without the lock and at
        # worst evicts by a phase a moment old
        self.since = self._clock()
        self.phase = phase


class ConnectionSlots:
    """At most ``limit`` connections at once, so at most ``limit`` threads serve them.

    When full, a newcomer takes the slot of the connection that has been waiting on its
    client the longest: one still owing its request (idle or slow-loris), else one stuck
    writing for ``write_grace_s`` (a client that does not read). Connections being served
    are never dropped; with every slot busy the newcomer is turned away. A fresh client
    is therefore always served while the slots are held by clients that do nothing.
    """

    def __init__(
        self,
        name: str,
        limit: int,
        write_grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("a server needs at least one connection slot")
        self.name = name
        self.limit = limit
        self.write_grace_s = write_grace_s
        self._clock = clock
        self._slots: dict[socket.socket, Slot] = {}
        self._changed = threading.Condition()
        self._full_log = LogThrottle(FULL_LOG_INTERVAL_S, clock)

    def __len__(self) -> int:
        with self._changed:
            return len(self._slots)

    def admit(self, sock: socket.socket) -> Slot | None:
        """A slot for ``sock``, or None: turn it away.

        When full, the chosen victim is hung up and its slot counts until its thread has
        released it, so there are never more than ``limit`` connection threads."""
        with self._changed:
            if len(self._slots) >= self.limit:
                victim = self._victim()
                if victim is None:
                    self._note_full("turned away a connection: every slot is busy")
                    return None
                victim.evicted = True
                self._note_full(
                    f"dropped a connection {victim.phase.value} for {self._age(victim)}"
                )
                _hang_up(victim.sock)
                if not self._changed.wait_for(lambda: len(self._slots) < self.limit, EVICT_WAIT_S):
                    return None
            slot = self._slots[sock] = Slot(sock, self._clock)
            return slot

    def slot(self, sock: socket.socket) -> Slot | None:
        """The slot of an admitted connection (None once it was evicted or released)."""
        with self._changed:
            slot = self._slots.get(sock)
            return None if slot is None or slot.evicted else slot

    def release(self, sock: socket.socket) -> None:
        """The connection is done (its thread is ending)."""
        with self._changed:
            self._slots.pop(sock, None)
            self._changed.notify_all()

    def hang_up_all(self) -> None:
        """Wake every connection's thread (server stop)."""
        with self._changed:
            socks = list(self._slots)
        for sock in socks:
            _hang_up(sock)

    def _victim(self) -> Slot | None:
        now = self._clock()
        waiting = [
            s
            for s in self._slots.values()
            if not s.evicted
            and (
                s.phase is Phase.READING
                or (s.phase is Phase.WRITING and now - s.since >= self.write_grace_s)
            )
        ]
        # readers first (they owe us a request), then the longest stuck
        return min(waiting, key=lambda s: (s.phase is not Phase.READING, s.since), default=None)

    def _age(self, slot: Slot) -> str:
        return f"{self._clock() - slot.since:.1f} s"

    def _note_full(self, what: str) -> None:
        held = self._full_log.allow()
        if held is not None:
            more = f" (and {held} more since the last report)" if held else ""
            logger.warning("%s: all %d slots in use; %s%s", self.name, self.limit, what, more)


def _hang_up(sock: socket.socket) -> None:
    """Make the connection's blocked recv/send return at once; its thread closes it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
