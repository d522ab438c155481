"""Download ledger on real SQLite files: owed images, states, crash recovery, releases."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clock import T0, ManualClock

from pepi_fleet.controller.ledger import LEDGER_FILE, ImageState, Ledger, LedgerError, image_path
from pepi_fleet.schemas import CaptureResult, CaptureStatus, Frame


def frame(camera: int, timestamp: float, fmt: str = "jpeg") -> Frame:
    sha = hashlib.sha256(f"{camera}-{timestamp}".encode()).hexdigest()
    return Frame.model_validate(
        {
            "camera": camera,
            "timestamp": timestamp,
            "width": 4,
            "height": 3,
            "format": fmt,
            "bytes": 100 + camera,
            "sha256": sha,
        }
    )


def result(
    node: str,
    capture_id: str,
    frames: list[Frame] | None = None,
    status: CaptureStatus = CaptureStatus.OK,
    fired_at: float = T0,
) -> CaptureResult:
    return CaptureResult(
        node_id=node,
        capture_id=capture_id,
        status=status,
        received_at=T0,
        fired_at=fired_at,
        frames=frames if frames is not None else [],
        error=None if status is CaptureStatus.OK else "busy",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    led = Ledger(tmp_path, clock)
    yield led
    led.close()


def test_ledger_creates_versioned_wal_database(tmp_path: Path, ledger: Ledger) -> None:
    assert ledger.path == tmp_path / LEDGER_FILE
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_ledger_refuses_newer_schema(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / LEDGER_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(tmp_path)


def test_ledger_refuses_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="move the file away"):
        Ledger(tmp_path)


def test_ledger_result_creates_owed_images(ledger: Ledger) -> None:
    ledger.record_set("scan-1", T0, ["a", "b"])
    assert ledger.record_result("scan-1", result("a", "scan-1", [frame(0, T0), frame(1, T0)]))
    owed = ledger.owed_by("a")
    assert [(i.camera, i.state, i.path) for i in owed] == [
        (0, ImageState.PENDING, "scan-1/ida_dscan-1_cam0.jpeg"),
        (1, ImageState.PENDING, "scan-1/ida_dscan-1_cam1.jpeg"),
    ]
    assert owed[0].node_capture_id == "scan-1" and owed[1].size == 101
    assert ledger.owed_by("b") == []
    assert not ledger.all_downloaded("scan-1")


def test_ledger_image_path_uses_pepi_naming_and_format_extension() -> None:
    assert image_path("s", "n1", 2, "jpeg") == "s/idn1_ds_cam2.jpeg"
    assert image_path("s", "n1", 0, "png") == "s/idn1_ds_cam0.png"
    assert image_path("s", "n1", 0, "raw") == "s/idn1_ds_cam0.npy"


def test_ledger_auto_set_downloads_from_node_capture_id(ledger: Ledger) -> None:
    ledger.record_set("auto-20251121T080000000Z", T0, ["a"], kind="auto")
    node_cid = "auto-20251121T080000012Z"
    ledger.record_result("auto-20251121T080000000Z", result("a", node_cid, [frame(0, T0)]))
    [row] = ledger.owed_by("a")
    assert row.node_capture_id == node_cid
    assert row.set_id == "auto-20251121T080000000Z"
    assert row.path.endswith("_dauto-20251121T080000000Z_cam0.jpeg")


def test_ledger_non_ok_result_owes_nothing_and_does_not_replace_ok(ledger: Ledger) -> None:
    ledger.record_set("s", T0, ["a", "b"])
    assert ledger.record_result("s", result("b", "s", status=CaptureStatus.BUSY))
    assert ledger.owed_by("b") == []
    ledger.record_result("s", result("a", "s", [frame(0, T0)]))
    assert not ledger.record_result("s", result("a", "s", status=CaptureStatus.DUPLICATE))
    detail = ledger.get_set("s")
    assert detail is not None
    statuses = {r.node_id: r.result.status for r in detail.results}
    assert statuses == {"a": CaptureStatus.OK, "b": CaptureStatus.BUSY}
    assert len(ledger.owed_by("a")) == 1


def test_ledger_result_without_set_creates_orphan_set(ledger: Ledger) -> None:
    ledger.record_result("7", result("a", "7", [frame(0, T0)]))
    detail = ledger.get_set("7")
    assert detail is not None
    assert detail.record.kind == "orphan" and detail.record.expected == ("a",)


def test_ledger_record_set_merges_expected(ledger: Ledger) -> None:
    ledger.record_set("s", T0, ["a"])
    ledger.record_set("s", T0 + 5, ["b"], at=T0 + 9)
    detail = ledger.get_set("s")
    assert detail is not None
    assert detail.record.expected == ("a", "b")
    assert detail.record.triggered_at == T0 and detail.record.at == T0 + 9


def test_ledger_tracks_spread_of_frames_and_fired(ledger: Ledger) -> None:
    ledger.record_set("s", T0, ["a", "b"])
    ledger.record_result("s", result("a", "s", [frame(0, T0 + 1.0), frame(1, T0 + 1.25)]))
    ledger.record_result("s", result("b", "s", [frame(0, T0 + 1.5)], fired_at=T0 + 0.5))
    [record] = ledger.list_sets()
    assert record.spread_s == pytest.approx(0.5)
    assert record.fired_spread_s == pytest.approx(0.5)


def test_ledger_done_and_failed_states(ledger: Ledger, clock: ManualClock) -> None:
    ledger.record_result("s", result("a", "s", [frame(0, T0), frame(1, T0)]))
    first, second = ledger.owed_by("a")
    ledger.mark_downloading(first.id)
    ledger.mark_done(first.id)
    ledger.mark_downloading(second.id)
    ledger.mark_failed(second.id, "corrupt transfer", retry_at=T0 + 30)
    assert ledger.owed_by("a", now=T0 + 10) == []  # backing off
    assert ledger.nodes_with_work(now=T0 + 10) == []
    [retry] = ledger.owed_by("a", now=T0 + 30)
    assert retry.state is ImageState.FAILED
    assert retry.attempts == 1 and retry.last_error == "corrupt transfer"
    assert [i.id for i in ledger.owed_by("a")] == [second.id]  # no back-off when asked
    assert not ledger.all_downloaded("s")
    ledger.mark_done(second.id)
    assert ledger.all_downloaded("s")
    [record] = ledger.list_sets()
    assert (record.images_total, record.images_done, record.images_failed) == (2, 2, 0)


def test_ledger_reopen_after_crash_mid_download_pending_again(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.record_set("s", T0, ["a"])
    led.record_result("s", result("a", "s", [frame(0, T0), frame(1, T0)]))
    first, second = led.owed_by("a")
    led.mark_downloading(first.id)
    led.mark_downloading(second.id)
    led.mark_done(second.id)
    assert [i.id for i in led.owed_by("a")] == []  # in flight: nobody else takes it
    del led  # killed: no close, no cleanup

    reopened = Ledger(tmp_path)
    [row] = reopened.owed_by("a")
    assert row.id == first.id and row.state is ImageState.PENDING and row.attempts == 0
    assert reopened.nodes_with_work() == ["a"]
    reopened.close()


def test_ledger_release_only_after_node_images_done(ledger: Ledger) -> None:
    ledger.record_set("s", T0, ["a", "b"])
    ledger.record_result("s", result("a", "s", [frame(0, T0)]))
    ledger.record_result("s", result("b", "s", [frame(0, T0)]))
    assert ledger.releasable("a") == []
    [row] = ledger.owed_by("a")
    ledger.mark_done(row.id)
    assert ledger.releasable("a") == [("s", "s")]
    assert ledger.releasable("b") == []
    ledger.mark_released("s", "a", error="connection refused")
    assert ledger.releasable("a") == [("s", "s")]  # retried later
    ledger.mark_released("s", "a")
    assert ledger.releasable("a") == []
    assert ledger.nodes_with_work() == ["b"]
    detail = ledger.get_set("s")
    assert detail is not None
    released = {r.node_id: r.released_at for r in detail.results}
    assert released == {"a": T0, "b": None}


def test_ledger_lists_sets_newest_first_with_paging(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record_set(f"s{i}", T0 + i, ["a"])
    assert [r.set_id for r in ledger.list_sets(limit=2)] == ["s4", "s3"]
    assert [r.set_id for r in ledger.list_sets(limit=2, offset=2)] == ["s2", "s1"]
    assert ledger.get_set("missing") is None


def test_ledger_set_complete(ledger: Ledger) -> None:
    ledger.record_set("s", T0, ["a"])
    ledger.set_complete("s", T0 + 10)
    ledger.mark_manifest_written("s")
    [record] = ledger.list_sets()
    assert record.state == "complete" and record.completed_at == T0 + 10
    assert record.manifest_at == T0


def test_ledger_survives_concurrent_writers(ledger: Ledger) -> None:
    def record(node: str) -> None:
        for i in range(20):
            ledger.record_result(f"s{i}", result(node, f"s{i}", [frame(0, T0 + i)]))

    threads = [threading.Thread(target=record, args=(f"n{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(ledger.owed_by(f"n{k}")) for k in range(4)) == 80


def test_ledger_holds_thrift_captures_for_pepi_clients(tmp_path: Path) -> None:
    clock = ManualClock()
    ledger = Ledger(tmp_path, clock, thrift_hold_s=600)
    pepi = result("a", "1", [frame(0, T0)]).model_copy(update={"source": "thrift"})
    ledger.record_result("1", pepi)
    ledger.record_result("s", result("a", "s", [frame(0, T0 + 1)]))
    for row in ledger.owed_by("a"):
        ledger.mark_done(row.id)
    assert ledger.releasable("a") == [("s", "s")]  # the MQTT capture at once
    ledger.mark_released("s", "a")
    assert ledger.nodes_with_work() == []
    clock.now = T0 + 600
    assert ledger.releasable("a") == [("1", "1")]  # PEPI's after the hold
    assert ledger.nodes_with_work() == ["a"]
    ledger.close()


def test_ledger_relocates_a_capture_renamed_on_the_node(ledger: Ledger) -> None:
    ledger.record_result("1", result("a", "1", [frame(0, T0)]))
    assert ledger.knows_capture("a", "1") and not ledger.knows_capture("a", "1.r1")
    ledger.relocate("1", "a", "1.r1")
    assert ledger.knows_capture("a", "1.r1") and not ledger.knows_capture("a", "1")
    assert [row.node_capture_id for row in ledger.owed_by("a")] == ["1.r1"]
    ok = ledger.ok_result("1", "a")
    assert ok is not None and ok.frames == [frame(0, T0)]
    assert ledger.ok_result("1", "b") is None
    assert ledger.set_with_image("a", frame(0, T0).sha256) == "1"
    assert ledger.set_with_image("b", frame(0, T0).sha256) is None


def test_ledger_free_set_id_skips_taken_ones(ledger: Ledger) -> None:
    assert ledger.free_set_id("x") == "x"
    ledger.record_set("x", T0, ["a"])
    ledger.record_set("x-2", T0, ["a"])
    assert ledger.free_set_id("x") == "x-3"
    long = "L" * 64
    ledger.record_set(long, T0, ["a"])
    assert ledger.free_set_id(long) == "L" * 60 + "-2"


def test_ledger_batch_commits_its_writes_together(tmp_path: Path, ledger: Ledger) -> None:
    other = sqlite3.connect(tmp_path / LEDGER_FILE)  # another reader: sees commits only
    with ledger.batch():
        assert ledger.record_result("burst", result("cam1", "burst", [frame(0, T0)]))
        assert ledger.record_result("burst", result("cam2", "burst", [frame(0, T0)]))
        assert other.execute("SELECT COUNT(*) FROM node_results").fetchone()[0] == 0
    assert other.execute("SELECT COUNT(*) FROM node_results").fetchone()[0] == 2
    assert ledger.nodes_owing("burst") == {"cam1", "cam2"}
    other.close()


def test_ledger_batch_write_that_fails_rolls_back_alone(ledger: Ledger) -> None:
    with ledger.batch():
        assert ledger.record_result("burst", result("cam1", "burst", [frame(0, T0)]))
        # a write that fails midway (no public write of the ledger fails there on purpose)
        with pytest.raises(RuntimeError), ledger._tx() as db:
            db.execute("UPDATE capture_sets SET expected = '[]' WHERE set_id = 'burst'")
            raise RuntimeError("failed midway")
        assert ledger.record_result("burst", result("cam3", "burst"))
    detail = ledger.get_set("burst")
    assert detail is not None
    assert detail.record.expected == ("cam1",)  # the failed write left nothing behind
    assert sorted(r.node_id for r in detail.results) == ["cam1", "cam3"]
    assert ledger.nodes_owing("burst") == {"cam1"}


def test_ledger_batch_that_raises_records_nothing(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.batch():
        assert ledger.record_result("burst", result("cam1", "burst", [frame(0, T0)]))
        raise RuntimeError("the controller stopped midway")
    assert ledger.get_set("burst") is None


def test_ledger_batch_keeps_other_threads_out_until_it_commits(ledger: Ledger) -> None:
    read: list[set[str]] = []
    with ledger.batch():
        ledger.record_result("burst", result("cam1", "burst", [frame(0, T0)]))
        reader = threading.Thread(target=lambda: read.append(ledger.nodes_owing("burst")))
        reader.start()
        reader.join(timeout=0.2)
        assert reader.is_alive()  # waiting for the batch
        ledger.record_result("burst", result("cam2", "burst", [frame(0, T0)]))
    reader.join(timeout=5)
    assert read == [{"cam1", "cam2"}]
