"""Login sessions of the web page (in memory: a restart signs everyone out) and the
throttle that slows down password guessing."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "pepi_session"
SESSION_TTL_S = 7 * 24 * 3600.0
"""A session ends this long after the login, used or not."""
MAX_SESSIONS = 1000
FAILED_LOGINS = 5
"""Failed logins from one address within FAILED_LOGINS_WINDOW_S before it must wait."""
FAILED_LOGINS_WINDOW_S = 60.0
TRACKED_ADDRESSES = 10_000
"""Beyond this many addresses with failures, those quiet for a window are forgotten."""


@dataclass(frozen=True)
class Session:
    """A signed-in user (their role is looked up afresh on every request)."""

    user: str
    expires_at: float


class SessionBook:
    """Session id -> user; ids are 256 random bits, each valid for ``ttl_s``."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self._max = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, user: str) -> str:
        """A new session for ``user``; the oldest goes when there are too many."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = Session(user, self._clock() + self.ttl_s)
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session_id

    def user(self, session_id: str) -> str | None:
        """The user of a live session, else None (an expired one is forgotten)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._clock() >= session.expires_at:
                del self._sessions[session_id]
                return None
            return session.user

    def close(self, session_id: str) -> None:
        """Sign out (nothing happens for an unknown id)."""
        with self._lock:
            self._sessions.pop(session_id, None)


class LoginThrottle:
    """After ``limit`` login attempts from one address within ``window_s`` that did not
    succeed, that address waits until the oldest of them is ``window_s`` old.

    An attempt counts as a failure from the start (``attempt``) until it succeeds, so a
    burst of parallel guesses is counted before the slow password checks finish.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        limit: int = FAILED_LOGINS,
        window_s: float = FAILED_LOGINS_WINDOW_S,
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def attempt(self, address: str) -> float:
        """0 and the attempt counted, or the seconds ``address`` must wait (not counted)."""
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(address, ()) if now - t < self.window_s]
            if len(recent) >= self.limit:
                return recent[0] + self.window_s - now
            self._failures.setdefault(address, deque(maxlen=self.limit)).append(now)
            if len(self._failures) > TRACKED_ADDRESSES:
                quiet = [a for a, t in self._failures.items() if now - t[-1] >= self.window_s]
                for a in quiet:
                    del self._failures[a]
            return 0.0

    def succeeded(self, address: str) -> None:
        """A good login clears the address's record of failures."""
        with self._lock:
            self._failures.pop(address, None)
