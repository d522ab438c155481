"""Login sessions expire and end on logout; password guessing gets slowed down."""

from __future__ import annotations

from support.clock import ManualClock

from pepi_fleet.controller.web.sessions import LoginThrottle, SessionBook


def test_sessions_open_until_expiry_or_close() -> None:
    clock = ManualClock(1000.0)
    book = SessionBook(clock, ttl_s=60)
    a, b = book.open("olga"), book.open("vic")
    assert a != b and len(a) >= 43
    assert book.user(a) == "olga" and book.user(b) == "vic"
    book.close(b)
    assert book.user(b) is None
    clock.now += 59.9
    assert book.user(a) == "olga"
    clock.now += 0.1
    assert book.user(a) is None
    assert book.user("made-up") is None


def test_sessions_are_bounded() -> None:
    book = SessionBook(ManualClock(1000.0), max_sessions=3)
    ids = [book.open(f"u{i}") for i in range(5)]
    assert [book.user(i) for i in ids] == [None, None, "u2", "u3", "u4"]


def test_throttle_after_five_failures_waits_out_the_window() -> None:
    clock = ManualClock(1000.0)
    throttle = LoginThrottle(clock, limit=5, window_s=60)
    for _ in range(5):
        assert throttle.attempt("10.0.0.9") == 0
        clock.now += 1
    assert throttle.attempt("10.0.0.9") == 55  # until the first failure is 60 s old
    assert throttle.attempt("10.0.0.8") == 0  # others are not held up
    clock.now += 55
    assert throttle.attempt("10.0.0.9") == 0


def test_throttle_success_clears_the_record() -> None:
    throttle = LoginThrottle(ManualClock(1000.0), limit=2, window_s=60)
    throttle.attempt("a")
    throttle.succeeded("a")
    assert throttle.attempt("a") == 0
    assert throttle.attempt("a") == 0
    assert throttle.attempt("a") > 0  # two attempts that did not succeed


def test_throttle_counts_parallel_attempts_before_they_finish() -> None:
    throttle = LoginThrottle(ManualClock(1000.0), limit=3, window_s=60)
    assert [throttle.attempt("a") == 0 for _ in range(4)] == [True, True, True, False]
