"""One named thread running queued jobs in order, each inside a guard, watched for progress."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Progress:
    """Work handed to one worker: how long work has been waiting without any finishing.

    Zero while the worker is idle; while work is pending, the time since the last job
    finished (or since work arrived at an idle worker).
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._since = 0.0

    def begin(self) -> None:
        with self._lock:
            if self._pending == 0:
                self._since = self._clock()
            self._pending += 1

    def end(self) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            self._since = self._clock()

    def stalled_s(self, now: float | None = None) -> float:
        """How long pending work has seen no job finish; 0 when there is none."""
        with self._lock:
            if self._pending == 0:
                return 0.0
            return max(0.0, (self._clock() if now is None else now) - self._since)


@dataclass(frozen=True)
class _Job:
    work: Callable[..., object]
    args: tuple[object, ...]
    what: str


class Worker:
    """A single thread for jobs that must not overlap (encoding, camera settings).

    Unlike a ThreadPoolExecutor, which keeps a failed job's exception in a future nobody
    reads, a failing job is logged naming what it was, and the thread carries on.
    """

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.progress = Progress(clock)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, work: Callable[..., object], *args: object, what: str = "") -> bool:
        """Queue ``work(*args)``; False (and logged) once the worker is stopping."""
        with self._lock:
            if self._closed:
                logger.warning("%s: not run, %s is stopping", what or _name(work), self.name)
                return False
            self.progress.begin()
            self._queue.put(_Job(work, args, what or _name(work)))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Run what is queued, then end; False if the thread is still busy after ``timeout``."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job.work(*job.args)
            except Exception:
                logger.exception("%s failed on the %s thread", job.what, self.name)
            finally:
                self.progress.end()


def _name(work: Callable[..., object]) -> str:
    return str(getattr(work, "__name__", work))
