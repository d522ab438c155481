"""A tiny fan-out of controller events (presence, results, sets) to live listeners."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from typing import Any

Event = dict[str, Any]


class EventHub:
    """Each subscriber gets its own bounded queue; a slow one loses events, never blocks us."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._subscribers: set[queue.Queue[Event]] = set()
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._seq = itertools.count(1)

    def subscribe(self) -> queue.Queue[Event]:
        q: queue.Queue[Event] = queue.Queue(self._maxsize)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[Event]) -> None:
        with self._lock:
            self._subscribers.discard(q)

    def listened(self) -> bool:
        """Whether anyone listens (an event nobody reads need not be built)."""
        return bool(self._subscribers)

    def emit(self, kind: str, **data: Any) -> None:
        event = {"type": kind, "seq": next(self._seq), "time": time.time(), **data}
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            with contextlib.suppress(queue.Full):
                q.put_nowait(event)
