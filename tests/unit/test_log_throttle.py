"""LogThrottle: a long broker outage logs its first failure, then at most once a minute."""

from __future__ import annotations

from support.clock import ManualClock

from pepi_fleet.core.mqtt_link import LogThrottle


def test_log_throttle_lets_first_event_through_then_holds_back_within_interval() -> None:
    clock = ManualClock(1000.0)
    throttle = LogThrottle(60.0, clock)
    assert throttle.allow() == 0
    for step in (1, 2, 4, 8, 16):
        clock.now += step
        assert throttle.allow() is None


def test_log_throttle_reports_how_many_were_held_back_after_the_interval() -> None:
    clock = ManualClock(1000.0)
    throttle = LogThrottle(60.0, clock)
    throttle.allow()
    for _ in range(5):
        clock.now += 10
        throttle.allow()
    clock.now += 10  # 60 s after the first
    assert throttle.allow() == 5
    clock.now += 1
    assert throttle.allow() is None


def test_log_throttle_reset_lets_the_next_event_through_at_once() -> None:
    clock = ManualClock(1000.0)
    throttle = LogThrottle(60.0, clock)
    throttle.allow()
    clock.now += 1
    assert throttle.allow() is None
    throttle.reset()  # connected again; a new outage starts
    clock.now += 1
    assert throttle.allow() == 0
