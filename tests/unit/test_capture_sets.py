"""Capture-set assembly: triggers, auto-id claims, orphans, completion and spread."""

from __future__ import annotations

import hashlib

import pytest
from support.clock import T0, ManualClock

from pepi_fleet.controller.capture_sets import CaptureSetBook, SetKind
from pepi_fleet.schemas import CaptureResult, CaptureStatus, Frame, auto_capture_id


def frame(camera: int, timestamp: float, tag: str = "") -> Frame:
    sha = hashlib.sha256(f"{camera}{timestamp}{tag}".encode()).hexdigest()
    return Frame(
        camera=camera, timestamp=timestamp, width=4, height=3, format="jpeg", bytes=10, sha256=sha
    )


def result(
    node: str,
    capture_id: str | None,
    received_at: float = T0,
    status: CaptureStatus = CaptureStatus.OK,
    frames: list[Frame] | None = None,
    fired_at: float | None = None,
    source: str = "mqtt",
) -> CaptureResult:
    if frames is None:
        frames = [frame(0, received_at + 0.01)] if status is CaptureStatus.OK else []
    return CaptureResult.model_validate(
        {
            "node_id": node,
            "capture_id": capture_id,
            "status": status,
            "received_at": received_at,
            "fired_at": fired_at if fired_at is not None else received_at,
            "frames": [f.model_dump() for f in frames],
            "error": None if status is CaptureStatus.OK else "nope",
            "source": source,
        }
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def book(clock: ManualClock) -> CaptureSetBook:
    return CaptureSetBook(clock)


def test_capture_sets_explicit_id_completes_when_all_expected_answer(
    book: CaptureSetBook, clock: ManualClock
) -> None:
    book.open_trigger("scan-042", {"a", "b"}, T0, None)
    first = book.add_result(result("a", "scan-042"), T0 + 0.2)
    assert first is not None and first.set_id == "scan-042" and not first.opened
    assert book.tick() == []
    clock.now = T0 + 0.3
    book.add_result(result("b", "scan-042"), T0 + 0.3)
    [summary] = book.tick()
    assert summary.capture_id == "scan-042"
    assert summary.complete
    assert summary.expected == ["a", "b"]
    assert summary.completed_at == T0 + 0.3
    assert [o.status for o in summary.outcomes] == [CaptureStatus.OK, CaptureStatus.OK]
    assert book.tick() == []  # each summary once


def test_capture_sets_times_out_with_missing_node(book: CaptureSetBook, clock: ManualClock) -> None:
    book.open_trigger("scan-1", {"a", "b"}, T0, None)
    book.add_result(result("a", "scan-1"), T0 + 0.1)
    clock.now = T0 + 9.9
    assert book.tick() == []
    clock.now = T0 + 10.0
    [summary] = book.tick()
    assert not summary.complete
    outcomes = {o.node_id: o for o in summary.outcomes}
    assert outcomes["b"].status is None
    assert outcomes["a"].frames == 1


def test_capture_sets_timeout_counts_from_later_of_trigger_and_at(
    book: CaptureSetBook, clock: ManualClock
) -> None:
    book.open_trigger("later", {"a"}, T0, None, at=T0 + 30)
    clock.now = T0 + 39.9
    assert book.tick() == []
    clock.now = T0 + 40.0
    assert [s.capture_id for s in book.tick()] == ["later"]


def test_capture_sets_spread_over_all_nodes_and_cameras(book: CaptureSetBook) -> None:
    book.open_trigger("s", {"a", "b"}, T0, None)
    book.add_result(result("a", "s", frames=[frame(0, T0 + 1.000), frame(1, T0 + 1.004)]), T0)
    book.add_result(result("b", "s", frames=[frame(0, T0 + 0.998)], fired_at=T0 + 0.5), T0)
    view = book.get("s")
    assert view is not None
    assert view.spread_s == pytest.approx(0.006, abs=1e-6)
    assert view.fired_spread_s == pytest.approx(0.5)
    [summary] = book.tick()
    assert summary.spread_s == pytest.approx(0.006, abs=1e-6)


def test_capture_sets_non_ok_counts_as_answered(book: CaptureSetBook) -> None:
    book.open_trigger("s", {"a", "b"}, T0, None)
    book.add_result(result("a", "s", status=CaptureStatus.BUSY), T0)
    book.add_result(result("b", "s", status=CaptureStatus.LATE), T0)
    [summary] = book.tick()
    assert not summary.complete
    assert summary.spread_s is None
    assert {o.status for o in summary.outcomes} == {CaptureStatus.BUSY, CaptureStatus.LATE}


def test_capture_sets_duplicate_does_not_overwrite_ok(book: CaptureSetBook) -> None:
    book.open_trigger("s", {"a", "b"}, T0, None)
    book.add_result(result("a", "s"), T0)
    dup = book.add_result(result("a", "s", status=CaptureStatus.DUPLICATE), T0 + 1)
    assert dup is not None and dup.set_id == "s"
    view = book.get("s")
    assert view is not None
    [part] = view.parts
    assert part.result.status is CaptureStatus.OK


def test_capture_sets_ok_replaces_earlier_non_ok(book: CaptureSetBook) -> None:
    book.open_trigger("s", {"a"}, T0, None)
    book.add_result(result("a", "s", status=CaptureStatus.BUSY), T0)
    book.tick()
    later = book.add_result(result("a", "s"), T0 + 2)
    assert later is not None and later.set_id == "s"
    view = book.get("s")
    assert view is not None and view.parts[0].result.status is CaptureStatus.OK
    assert book.tick() == []  # the set's summary went out once, when it completed


def test_capture_sets_redelivered_result_goes_to_same_set(book: CaptureSetBook) -> None:
    book.open_trigger(None, {"a"}, T0, None)
    r = result("a", auto_capture_id(T0 + 0.01), T0 + 0.01)
    first = book.add_result(r, T0 + 0.1)
    again = book.add_result(r, T0 + 0.2)
    assert first is not None and again is not None
    assert again.set_id == first.set_id and not again.opened
    view = book.get(first.set_id)
    assert view is not None and [p.node_id for p in view.parts] == ["a"]


def test_capture_sets_idless_trigger_claims_auto_results_in_window(
    book: CaptureSetBook,
) -> None:
    view = book.open_trigger(None, {"a", "b", "c"}, T0, None)
    assert view.set_id == auto_capture_id(T0)
    assert view.kind is SetKind.AUTO
    # Node clocks differ: one a bit before the controller, one later.
    a = book.add_result(result("a", auto_capture_id(T0 - 1.5), T0 - 1.5), T0)
    b = book.add_result(result("b", auto_capture_id(T0 + 4.0), T0 + 4.0), T0)
    c = book.add_result(result("c", auto_capture_id(T0 + 6.0), T0 + 6.0), T0)
    assert a is not None and a.set_id == view.set_id and a.node_capture_id.startswith("auto-")
    assert b is not None and b.set_id == view.set_id
    assert c is not None and c.opened and c.set_id == auto_capture_id(T0 + 6.0)
    claimed = book.get(view.set_id)
    assert claimed is not None
    assert {p.node_id: p.node_capture_id for p in claimed.parts} == {
        "a": auto_capture_id(T0 - 1.5),
        "b": auto_capture_id(T0 + 4.0),
    }


def test_capture_sets_idless_trigger_ignores_unexpected_nodes(book: CaptureSetBook) -> None:
    view = book.open_trigger(None, {"a"}, T0, None)
    other = book.add_result(result("z", auto_capture_id(T0), T0), T0)
    assert other is not None and other.set_id != view.set_id and other.opened
    assert book.get(view.set_id) is not None
    assert book.get(view.set_id).parts == ()  # type: ignore[union-attr]


def test_capture_sets_per_node_trigger_expects_only_that_node(book: CaptureSetBook) -> None:
    view = book.open_trigger(None, {"a", "b"}, T0, "b")
    assert view.expected == {"b"}
    broadcast = book.open_trigger(None, {"a", "b"}, T0 + 0.5, None)
    a = book.add_result(result("a", auto_capture_id(T0 + 0.5), T0 + 0.5), T0 + 0.6)
    assert a is not None and a.set_id == broadcast.set_id
    b = book.add_result(result("b", auto_capture_id(T0), T0), T0 + 0.1)
    assert b is not None and b.set_id == view.set_id
    [summary] = book.tick()
    assert summary.capture_id == view.set_id and summary.complete


def test_capture_sets_back_to_back_idless_triggers_each_get_their_node_result(
    book: CaptureSetBook,
) -> None:
    # The node's clock runs 0.6 s ahead; an earlier lone trigger shows by how much.
    book.open_trigger(None, {"a"}, T0 - 100, None)
    book.add_result(result("a", auto_capture_id(T0 - 99.4), T0 - 99.4), T0 - 99.9)
    first = book.open_trigger(None, {"a"}, T0, None)
    second = book.open_trigger(None, {"a"}, T0 + 1.0, None)
    # Both results arrive while both sets are open; by raw time T0 + 0.6 is nearer the second.
    r1 = book.add_result(result("a", auto_capture_id(T0 + 0.6), T0 + 0.6), T0 + 1.1)
    r2 = book.add_result(result("a", auto_capture_id(T0 + 1.6), T0 + 1.6), T0 + 1.2)
    assert r1 is not None and r1.set_id == first.set_id
    assert r2 is not None and r2.set_id == second.set_id


def test_capture_sets_node_answers_each_idless_trigger_once(book: CaptureSetBook) -> None:
    first = book.open_trigger(None, {"a"}, T0, None)
    r1 = book.add_result(result("a", auto_capture_id(T0 + 0.01), T0 + 0.01), T0 + 0.1)
    second = book.open_trigger(None, {"a"}, T0 + 1.0, None)
    r2 = book.add_result(result("a", auto_capture_id(T0 + 0.2), T0 + 0.2), T0 + 1.1)
    assert r1 is not None and r1.set_id == first.set_id
    assert r2 is not None and r2.set_id == second.set_id


def test_capture_sets_two_idless_triggers_in_same_ms_get_distinct_names(
    book: CaptureSetBook,
) -> None:
    one = book.open_trigger(None, {"a"}, T0, None)
    two = book.open_trigger(None, {"a"}, T0, None)
    assert one.set_id != two.set_id
    assert two.set_id.startswith(one.set_id)


def test_capture_sets_result_without_open_set_opens_orphan(
    book: CaptureSetBook, clock: ManualClock
) -> None:
    a = book.add_result(result("a", "7", source="thrift"), T0)
    b = book.add_result(result("b", "7", source="thrift"), T0 + 0.5)
    assert a is not None and a.opened and a.set_id == "7"
    assert b is not None and not b.opened and b.set_id == "7"
    view = book.get("7")
    assert view is not None and view.kind is SetKind.ORPHAN
    assert view.expected == {"a", "b"}
    assert book.tick() == []  # orphans gather until their deadline
    clock.now = T0 + 10
    [summary] = book.tick()
    assert summary.capture_id == "7" and summary.complete


def test_capture_sets_orphan_auto_results_group_by_receipt_time(book: CaptureSetBook) -> None:
    # The controller missed an id-less trigger: nodes' auto results still land together.
    a = book.add_result(result("a", auto_capture_id(T0), T0), T0 + 0.1)
    b = book.add_result(result("b", auto_capture_id(T0 + 0.003), T0 + 0.003), T0 + 0.1)
    assert a is not None and b is not None
    assert a.opened and not b.opened and b.set_id == a.set_id


def test_capture_sets_repeated_explicit_id_reopens_set(
    book: CaptureSetBook, clock: ManualClock
) -> None:
    book.open_trigger("s", {"a"}, T0, None)
    book.add_result(result("a", "s"), T0)
    assert len(book.tick()) == 1
    reopened = book.open_trigger("s", {"a", "b"}, T0 + 20, None)
    assert reopened.completed_at is None and reopened.expected == {"a", "b"}
    book.add_result(result("b", "s"), T0 + 20.1)
    [summary] = book.tick()
    assert summary.complete and summary.expected == ["a", "b"]


def test_capture_sets_recapture_under_same_id_gets_its_own_set(book: CaptureSetBook) -> None:
    book.open_trigger("1", {"a"}, T0, None)
    book.add_result(result("a", "1", frames=[frame(0, T0)]), T0)
    again = book.add_result(result("a", "1", frames=[frame(0, T0 + 60)]), T0 + 60)
    assert again is not None and again.opened and again.set_id == "1-2"
    assert again.node_capture_id == "1"


def test_capture_sets_result_without_capture_id_is_not_filed(book: CaptureSetBook) -> None:
    assert book.add_result(result("a", None, status=CaptureStatus.ERROR), T0) is None


def test_capture_sets_trigger_with_no_expected_nodes_waits_for_deadline(
    book: CaptureSetBook, clock: ManualClock
) -> None:
    book.open_trigger("s", set(), T0, None)
    assert book.tick() == []
    clock.now = T0 + 10
    [summary] = book.tick()
    assert not summary.complete and summary.outcomes == []


def test_capture_sets_forgets_completed_sets_after_keep_time(clock: ManualClock) -> None:
    book = CaptureSetBook(clock, keep_completed_s=60)
    book.open_trigger("s", {"a"}, T0, None)
    book.add_result(result("a", "s"), T0)
    book.tick()
    clock.now = T0 + 61
    book.tick()
    assert book.get("s") is None


def test_capture_sets_ask_the_ledger_only_about_an_earlier_runs_set(clock: ManualClock) -> None:
    asked: list[tuple[str, str]] = []

    def held_before(set_id: str, r: CaptureResult) -> bool:
        asked.append((set_id, r.node_id))
        return r.node_id == "cam2"  # the earlier run holds another capture of cam2

    book = CaptureSetBook(clock, known_set=lambda s: s == "scan-old", held_before=held_before)
    book.open_trigger("scan-new", {"cam1", "cam2"}, T0)
    book.open_trigger("scan-old", {"cam1", "cam2"}, T0)
    for node in ("cam1", "cam2"):
        assert book.add_result(result(node, "scan-new"), T0) is not None
    assert asked == []  # a set of this run: its own parts tell a re-capture
    placed = {n: book.add_result(result(n, "scan-old"), T0) for n in ("cam1", "cam2")}
    assert asked == [("scan-old", "cam1"), ("scan-old", "cam2")]
    assert placed["cam1"] is not None and placed["cam1"].set_id == "scan-old"
    assert placed["cam2"] is not None and placed["cam2"].set_id != "scan-old"  # kept apart
