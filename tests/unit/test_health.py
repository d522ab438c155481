"""The node's self-health: the pure verdict, progress tracking, guarded workers."""

from __future__ import annotations

import threading

import pytest

from pepi_fleet.core.mqtt_link import TAKEOVER_BACKOFF_MAX_S, takeover_backoff_s
from pepi_fleet.node.agent import _salvage_capture_id
from pepi_fleet.node.health import FATAL_STALL_FACTOR, Health, Vital, assess
from pepi_fleet.node.worker import Progress, Worker

STALL = 30.0


def test_assess_all_alive_and_idle_is_ok() -> None:
    health = assess([Vital("capture", True), Vital("encoder", True, 1.0)], STALL)
    assert health == Health("ok") and health.ok and health.fatal is None


def test_assess_stalled_worker_degrades_without_being_fatal() -> None:
    health = assess([Vital("encoder", True, STALL + 1)], STALL)
    assert health.summary == "degraded: encoder no progress for 31 s"
    assert health.fatal is None


def test_assess_long_stall_is_fatal() -> None:
    health = assess([Vital("capture", True, FATAL_STALL_FACTOR * STALL)], STALL)
    assert health.fatal is not None and "capture" in health.fatal


def test_assess_dead_worker_is_fatal_and_named() -> None:
    health = assess([Vital("mqtt network loop", False), Vital("capture", True)], STALL)
    assert health.summary == "degraded: mqtt network loop thread died"
    assert health.fatal == "mqtt network loop thread died"


def test_assess_notes_degrade_only() -> None:
    health = assess([Vital("capture", True)], STALL, ("another client is using node id a",))
    assert health.summary == "degraded: another client is using node id a"
    assert health.fatal is None


def test_progress_counts_stall_only_while_work_waits() -> None:
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    assert progress.stalled_s() == 0
    progress.begin()
    now[0] = 105.0
    progress.begin()
    assert progress.stalled_s() == 5.0
    progress.end()  # one finished: progress, the clock restarts
    assert progress.stalled_s() == 0.0
    now[0] = 107.0
    assert progress.stalled_s() == 2.0
    progress.end()
    assert progress.stalled_s() == 0


def test_worker_survives_a_failing_job_and_runs_the_next() -> None:
    worker = Worker("test")
    worker.start()
    done = threading.Event()

    def boom() -> None:
        raise OverflowError("sleep length is too large")

    try:
        assert worker.submit(boom, what="bad job")
        assert worker.submit(done.set)
        assert done.wait(5)
        assert worker.alive
    finally:
        assert worker.stop(timeout=5)
    assert not worker.submit(done.set)  # stopped: refused, not queued forever


@pytest.mark.parametrize("depth", [2048, 3000, 100_000])
def test_salvage_capture_id_survives_deep_nesting(depth: int) -> None:
    assert _salvage_capture_id(("[" * depth + "]" * depth).encode()) is None
    assert _salvage_capture_id(('{"a":' * depth + "1" + "}" * depth).encode()) is None


def test_salvage_capture_id_finds_a_usable_id() -> None:
    assert _salvage_capture_id(b'{"capture_id": "scan-1", "pad": "' + b"p" * 5000 + b'"}') == (
        "scan-1"
    )
    assert _salvage_capture_id(b'{"capture_id": "../x"}') is None


def test_takeover_backoff_grows_to_a_cap() -> None:
    delays = [takeover_backoff_s(n) for n in range(1, 12)]
    assert delays[0] >= 2
    assert delays == sorted(delays)
    assert delays[-1] == TAKEOVER_BACKOFF_MAX_S
    assert takeover_backoff_s(10**9) == TAKEOVER_BACKOFF_MAX_S
