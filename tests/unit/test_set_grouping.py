"""One trigger, one set: re-used ids and PEPI re-captures never split a set per node; sets that
miss a node, a camera or fire late read incomplete and say why."""

from __future__ import annotations

from support.clock import T0, ManualClock
from test_capture_sets import frame, result

from pepi_fleet.controller.capture_sets import CaptureSetBook
from pepi_fleet.schemas import CaptureResult, CaptureSetSummary, CaptureStatus

NODES = ["cam01", "cam02", "cam03"]


def fresh(node: str, capture_id: str, t: float, source: str = "mqtt") -> CaptureResult:
    """An ok result whose frames differ from any earlier capture of the node."""
    return result(
        node, capture_id, t, frames=[frame(0, t + 0.01, tag=f"{node}@{t}")], source=source
    )


def complete_set(book: CaptureSetBook, clock: ManualClock, capture_id: str) -> None:
    book.open_trigger(capture_id, NODES, clock())
    for node in NODES:
        book.add_result(fresh(node, capture_id, clock()), clock())
    assert [s.capture_id for s in book.tick()] == [capture_id]


def test_set_grouping_reused_id_recaptured_lands_in_one_new_set() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    complete_set(book, clock, "scan-042")
    clock.now += 60
    book.open_trigger("scan-042", NODES, clock())  # nodes that forgot the id capture again
    sets = {book.add_result(fresh(n, "scan-042", clock.now), clock.now).set_id for n in NODES}
    assert len(sets) == 1, sets
    (set_id,) = sets
    assert set_id != "scan-042"
    view = book.get(set_id)
    assert view is not None and view.answered == frozenset(NODES)


def test_set_grouping_pepi_recaptures_are_one_set_per_trigger() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    # A PEPI client numbers from 1: it starts capture "1" on each node over Thrift, twice.
    firsts = {book.add_result(fresh(n, "1", T0 + i * 0.2, "thrift"), T0 + i * 0.2).set_id
              for i, n in enumerate(NODES)}  # fmt: skip
    t = T0 + 30
    seconds = {book.add_result(fresh(n, "1", t + i * 0.2, "thrift"), t + i * 0.2).set_id
               for i, n in enumerate(NODES)}  # fmt: skip
    assert firsts == {"1"}
    assert len(seconds) == 1 and seconds != firsts


def test_set_grouping_after_restart_uses_the_ledger_memory() -> None:
    clock = ManualClock()
    earlier = {"scan-7"}  # what the ledger of the previous run holds

    def held_before(set_id: str, r: CaptureResult) -> bool:
        return set_id in earlier  # every node has another ok capture there

    book = CaptureSetBook(clock, known_set=earlier.__contains__, held_before=held_before)
    book.open_trigger("scan-7", NODES, clock())
    sets = {book.add_result(fresh(n, "scan-7", clock.now), clock.now).set_id for n in NODES}
    assert sets == {"scan-7-2"}


def summary_of(book: CaptureSetBook, clock: ManualClock) -> CaptureSetSummary:
    clock.now += 60
    (summary,) = book.tick()
    return summary


def test_set_summary_missing_node_is_incomplete_and_named() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    book.open_trigger("s1", NODES, clock())
    for node in NODES[:2]:
        book.add_result(fresh(node, "s1", clock()), clock())
    summary = summary_of(book, clock)
    assert not summary.complete
    assert summary.missing == ["cam03"]
    assert any("cam03 never answered" in p for p in summary.problems)


def test_set_summary_late_firer_is_an_outlier() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock, fire_tolerance_s=0.1)
    book.open_trigger("s2", NODES, clock())
    for node, delay in zip(NODES, [0.0, 0.004, 6.0], strict=True):
        r = result(node, "s2", T0 + delay, fired_at=T0 + delay)
        book.add_result(r, T0 + delay)
    summary = book.tick()[0]
    assert not summary.complete
    assert summary.outliers == ["cam03"]
    by_node = {o.node_id: o for o in summary.outcomes}
    assert by_node["cam03"].outlier and not by_node["cam01"].outlier
    assert by_node["cam03"].fire_offset_s is not None and by_node["cam03"].fire_offset_s > 5


def test_set_summary_missing_camera_is_incomplete() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    book.open_trigger("s3", NODES[:1], clock(), cameras={"cam01": [0, 1]})
    book.add_result(fresh("cam01", "s3", clock()), clock())  # camera 0 only
    summary = book.tick()[0]
    assert not summary.complete
    assert any("camera 1" in p for p in summary.problems)


def test_set_summary_all_present_in_time_is_complete() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    book.open_trigger("s4", NODES, clock(), cameras={n: [0] for n in NODES})
    for node in NODES:
        book.add_result(fresh(node, "s4", clock()), clock())
    summary = book.tick()[0]
    assert summary.complete and summary.problems == [] and summary.outliers == []


def test_set_summary_duplicate_answers_do_not_split_or_complete_falsely() -> None:
    clock = ManualClock()
    book = CaptureSetBook(clock)
    complete_set(book, clock, "scan-9")
    clock.now += 5
    book.open_trigger("scan-9", NODES, clock())  # re-sent: nodes remember the id
    sets = {
        book.add_result(
            result(n, "scan-9", clock.now, status=CaptureStatus.DUPLICATE), clock.now
        ).set_id
        for n in NODES
    }
    assert sets == {"scan-9"}
