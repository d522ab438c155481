"""Capture sets with nodes behind a site bridge that is down: not waited for, named per site
apart from the nodes that are missing."""

from __future__ import annotations

from support.clock import T0, ManualClock
from test_capture_sets import result

from pepi_fleet.controller.capture_sets import CaptureSetBook
from pepi_fleet.controller.set_quality import assess, by_site
from pepi_fleet.schemas.controller import CaptureSetSummary


def test_set_unreachable_node_not_waited_for_and_named_by_site() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=10.0)
    view = book.open_trigger("scan-1", {"a", "b"}, T0, unreachable={"n1": "north"})
    assert view.expected == {"a", "b"}
    book.add_result(result("a", "scan-1"), T0 + 0.1)
    book.add_result(result("b", "scan-1"), T0 + 0.1)
    clock.now = T0 + 0.2
    [summary] = book.tick()  # complete at once: nobody waits for n1's timeout
    assert not summary.complete
    assert summary.missing == []
    assert summary.unreachable == {"north": ["n1"]}
    assert summary.expected == ["a", "b"]
    assert [o.node_id for o in summary.outcomes] == ["a", "b", "n1"]
    assert summary.outcomes[2].status is None
    assert summary.problems == ["site north was cut off (its bridge was down): n1 not triggered"]


def test_set_cut_off_sites_are_one_problem_each_beside_missing_nodes() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=1.0)
    cut = {"n2": "north", "n1": "north", "s1": "south"}
    book.open_trigger("scan-4", {"a", "b"}, T0, unreachable=cut)
    book.add_result(result("a", "scan-4"), T0 + 0.1)
    clock.now = T0 + 1.5
    [summary] = book.tick()
    assert summary.missing == ["b"]
    assert summary.unreachable == {"north": ["n1", "n2"], "south": ["s1"]}
    assert summary.problems == [
        "b never answered",
        "site north was cut off (its bridge was down): n1, n2 not triggered",
        "site south was cut off (its bridge was down): s1 not triggered",
    ]


def test_set_all_reachable_nodes_answered_is_complete() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=10.0)
    book.open_trigger("scan-2", {"a"}, T0)
    book.add_result(result("a", "scan-2"), T0 + 0.1)
    [summary] = book.tick()
    assert summary.complete and summary.missing == [] and summary.unreachable == {}


def test_set_per_node_trigger_names_only_its_target() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=1.0)
    cut = {"n1": "north", "n2": "north"}
    view = book.open_trigger("solo-1", {"a"}, T0, target_node="n1", unreachable=cut)
    assert view.expected == frozenset()
    assert view.unreachable == {"n1": "north"}
    clock.now = T0 + 1.5
    [summary] = book.tick()
    assert summary.unreachable == {"north": ["n1"]} and not summary.complete


def test_set_reopened_id_forgets_a_node_now_expected() -> None:
    """The same id sent again once the site is back: its nodes are expected, not cut off."""
    book = CaptureSetBook(ManualClock(), timeout_s=1.0)
    book.open_trigger("scan-5", {"a"}, T0, unreachable={"n1": "north", "n2": "north"})
    view = book.open_trigger("scan-5", {"a", "n1"}, T0 + 1, unreachable={"n2": "north"})
    assert view.expected == {"a", "n1"} and view.unreachable == {"n2": "north"}


def test_set_unreachable_node_that_answers_after_all_counts() -> None:
    """Its bridge came back in time (a scheduled capture): its result is kept, not missing."""
    clock = ManualClock()
    book = CaptureSetBook(clock, timeout_s=1.0)
    book.open_trigger("scan-3", {"a"}, T0, unreachable={"n1": "north"})
    book.add_result(result("n1", "scan-3"), T0 + 0.1)
    book.add_result(result("a", "scan-3"), T0 + 0.1)
    clock.now = T0 + 1.5
    [summary] = book.tick()
    assert summary.missing == [] and summary.unreachable == {}
    assert [o.node_id for o in summary.outcomes] == ["a", "n1"]


def test_assess_without_unreachable_names_no_site() -> None:
    verdict = assess(["a"], {"a": result("a", "x")})
    assert verdict.unreachable == {} and verdict.complete


def test_by_site_groups_and_sorts() -> None:
    assert by_site({"c": "b-site", "a": "z-site", "b": "b-site"}) == {
        "b-site": ["b", "c"],
        "z-site": ["a"],
    }


def test_summary_of_a_controller_before_sites_still_reads() -> None:
    """``unreachable`` is optional: a summary without it (an older controller) is valid."""
    old = CaptureSetSummary(
        capture_id="x", triggered_at=T0, completed_at=T0, expected=[], outcomes=[],
        spread_s=None, complete=False,
    ).model_dump(exclude={"unreachable"})  # fmt: skip
    assert "unreachable" not in old
    assert CaptureSetSummary.model_validate(old).unreachable == {}
