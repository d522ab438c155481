"""The node's record of capture ids taken: persistent, bounded by count and by age."""

from __future__ import annotations

from pathlib import Path

from support.clock import T0, ManualClock

from pepi_fleet.node.taken_ids import DAY_S, TAKEN_IDS_FILE, TakenIds


def test_taken_ids_survive_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / TAKEN_IDS_FILE
    ids = TakenIds(path, clock=clock)
    ids.add("scan-1")
    clock.now += 5
    ids.add("auto-20251121T080000000Z")
    again = TakenIds(path, clock=clock)
    assert again.taken_at("scan-1") == T0
    assert again.taken_at("auto-20251121T080000000Z") == T0 + 5
    assert again.taken_at("scan-2") is None


def test_taken_ids_forget_the_oldest_beyond_the_count(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / TAKEN_IDS_FILE
    ids = TakenIds(path, max_ids=3, clock=clock)
    for n in range(10):
        clock.now += 1
        ids.add(f"id-{n}")
    assert len(ids) == 3
    assert ids.taken_at("id-6") is None and ids.taken_at("id-7") is not None
    # the file is rewritten before it grows past twice the bound
    assert len(path.read_text().splitlines()) < 2 * 3
    assert len(TakenIds(path, max_ids=3, clock=clock)) == 3


def test_taken_ids_forget_ids_older_than_the_age_bound(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / TAKEN_IDS_FILE
    ids = TakenIds(path, max_age_s=30 * DAY_S, clock=clock)
    ids.add("old")
    clock.now += 20 * DAY_S
    ids.add("newer")
    clock.now += 11 * DAY_S
    assert ids.taken_at("old") is None
    assert ids.taken_at("newer") is not None
    assert TakenIds(path, max_age_s=30 * DAY_S, clock=clock).taken_at("old") is None


def test_taken_ids_skip_a_damaged_file_line_and_keep_the_rest(tmp_path: Path) -> None:
    path = tmp_path / TAKEN_IDS_FILE
    path.write_text(f"{T0} good\nnot-a-time x\n{T0} ../../etc\n{T0}\n\x00\xff\n{T0 + 1} fine\n")
    ids = TakenIds(path, clock=ManualClock())
    assert ids.taken_at("good") == T0 and ids.taken_at("fine") == T0 + 1
    assert len(ids) == 2
    assert path.read_text().splitlines() == [f"{T0:.3f} good", f"{T0 + 1:.3f} fine"]


def test_taken_ids_in_memory_without_a_file() -> None:
    ids = TakenIds(None, clock=ManualClock())
    ids.add("a")
    assert ids.taken_at("a") == T0
