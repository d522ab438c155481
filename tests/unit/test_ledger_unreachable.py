"""Nodes cut off at trigger time (their site's bridge was down) kept in the ledger, on real
SQLite files: they survive a restart into the summary, the manifest and the API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support.clock import T0, ManualClock
from test_ledger import frame, result

from pepi_fleet.controller.ledger import LEDGER_FILE, Ledger
from pepi_fleet.controller.manifest import build_manifest
from pepi_fleet.controller.service import summary_from_ledger
from pepi_fleet.controller.web.api_models import CaptureSetOut

CUT = {"cam06": "north", "cam05": "north", "cam09": "south"}


def record_cut_set(ledger: Ledger) -> None:
    ledger.record_set("scan-1", T0, ["cam01"], unreachable=CUT)
    ledger.record_result("scan-1", result("cam01", "scan-1", [frame(0, T0)]))
    ledger.set_complete("scan-1", T0 + 1, whole=False)


def test_ledger_unreachable_survives_a_restart_into_the_summary(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, ManualClock())
    record_cut_set(ledger)
    ledger.close()
    again = Ledger(tmp_path, ManualClock())
    detail = again.get_set("scan-1")
    again.close()
    assert detail is not None
    assert detail.record.unreachable == CUT
    summary = summary_from_ledger(detail, T0 + 1)
    assert summary.expected == ["cam01"] and summary.missing == []
    assert summary.unreachable == {"north": ["cam05", "cam06"], "south": ["cam09"]}
    assert not summary.complete
    assert "site north was cut off (its bridge was down): cam05, cam06 not triggered" in (
        summary.problems
    )


def test_ledger_unreachable_in_manifest_and_api(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, ManualClock())
    record_cut_set(ledger)
    detail = ledger.get_set("scan-1")
    [listed] = ledger.list_sets()
    ledger.close()
    assert detail is not None
    manifest = build_manifest(detail, T0 + 2)
    assert manifest.unreachable == {"north": ["cam05", "cam06"], "south": ["cam09"]}
    assert manifest.missing == [] and manifest.complete is False
    out = CaptureSetOut.of(listed)
    assert out.unreachable == {"north": ["cam05", "cam06"], "south": ["cam09"]}
    assert out.expected == ["cam01"]


def test_ledger_unreachable_merges_and_drops_nodes_expected_or_answering(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path, ManualClock())
    ledger.record_set("scan-2", T0, ["cam01"], unreachable={"cam05": "north", "cam06": "north"})
    # the same id again once north is back for cam05: expected now, no longer cut off
    ledger.record_set("scan-2", T0 + 5, ["cam05"], unreachable={"cam09": "south"})
    # cam06 got the trigger after all (a scheduled capture, the bridge back in time)
    ledger.record_result("scan-2", result("cam06", "scan-2", [frame(0, T0)]))
    detail = ledger.get_set("scan-2")
    ledger.close()
    assert detail is not None
    assert detail.record.expected == ("cam01", "cam05")
    assert detail.record.unreachable == {"cam09": "south"}


def test_ledger_from_before_sites_opens_with_nobody_cut_off(tmp_path: Path) -> None:
    """A ledger an older controller wrote (no ``unreachable`` column) is upgraded in place."""
    ledger = Ledger(tmp_path, ManualClock())
    ledger.record_set("old-1", T0, ["cam01"])
    ledger.close()
    db = sqlite3.connect(tmp_path / LEDGER_FILE)
    db.execute("ALTER TABLE capture_sets DROP COLUMN unreachable")
    db.commit()
    db.close()
    upgraded = Ledger(tmp_path, ManualClock())
    old = upgraded.get_set("old-1")
    upgraded.record_set("new-1", T0 + 1, ["cam01"], unreachable={"cam05": "north"})
    new = upgraded.get_set("new-1")
    upgraded.close()
    assert old is not None and old.record.unreachable == {}
    assert new is not None and new.record.unreachable == {"cam05": "north"}
