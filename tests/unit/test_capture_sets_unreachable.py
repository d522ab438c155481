"""Capture sets with nodes behind a site bridge that is down: not waited for, named missing."""

from __future__ import annotations

from support.clock import T0, ManualClock
from test_capture_sets import result

from pepi_fleet.controller.capture_sets import CaptureSetBook


def test_set_unreachable_node_not_waited_for_and_named_missing() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=10.0)
    view = book.open_trigger("scan-1", {"a", "b"}, T0, unreachable={"n1"})
    assert view.expected == {"a", "b"}
    book.add_result(result("a", "scan-1"), T0 + 0.1)
    book.add_result(result("b", "scan-1"), T0 + 0.1)
    clock.now = T0 + 0.2
    [summary] = book.tick()  # complete at once: nobody waits for n1's timeout
    assert not summary.complete
    assert summary.missing == ["n1"]
    assert summary.expected == ["a", "b"]
    assert [o.node_id for o in summary.outcomes] == ["a", "b", "n1"]
    assert summary.outcomes[2].status is None
    assert summary.problems == ["n1 was unreachable (its site's bridge was down): not triggered"]


def test_set_all_reachable_nodes_answered_is_complete() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=10.0)
    book.open_trigger("scan-2", {"a"}, T0)
    book.add_result(result("a", "scan-2"), T0 + 0.1)
    [summary] = book.tick()
    assert summary.complete and summary.missing == []


def test_set_per_node_trigger_names_only_its_target() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=1.0)
    view = book.open_trigger("solo-1", {"a"}, T0, target_node="n1", unreachable={"n1", "n2"})
    assert view.expected == frozenset()
    assert view.unreachable == {"n1"}
    clock.now = T0 + 1.5
    [summary] = book.tick()
    assert summary.missing == ["n1"] and not summary.complete


def test_set_unreachable_node_that_answers_after_all_counts() -> None:
    """Its bridge came back in time (a scheduled capture): its result is kept, not missing."""
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=1.0)
    book.open_trigger("scan-3", {"a"}, T0, unreachable={"n1"})
    book.add_result(result("n1", "scan-3"), T0 + 0.1)
    book.add_result(result("a", "scan-3"), T0 + 0.1)
    clock.now = T0 + 1.5
    [summary] = book.tick()
    assert summary.missing == []
    assert [o.node_id for o in summary.outcomes] == ["a", "n1"]
