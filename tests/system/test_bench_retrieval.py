"""The retrieval bench keeps running: ``python -m bench.retrieval --quick --json`` moves real
12 MP captures from real nodes by every path (raw TCP, raw TCP with the controller's hashing
and durable writes, the controller, PEPI's way), checks every file the controller wrote and
reports each path and target. Figures are not checked (timings are never pass/fail here)."""

from __future__ import annotations

import json

import pytest

from bench import retrieval

pytestmark = pytest.mark.system


def test_quick_retrieval_bench_reports_every_path_and_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    retrieval.main(["--quick", "--json"])
    report = json.loads(capsys.readouterr().out)
    paths = {p["path"]: p for p in report["retrieval"]["paths"]}
    assert set(paths) == set(retrieval.PATHS)
    for path in paths.values():
        assert len(path["mb_per_s"]) == 2  # --quick: 2 captures, each moved by every path
        assert all(speed > 0 for speed in path["mb_per_s"])
    [e2e] = report["e2e"]
    assert e2e["nodes"] == e2e["images"] == 2
    names = [t["name"] for t in report["targets"]]
    assert any("controller >= 50% of raw TCP" in n for n in names)
    assert any("controller's per-byte work" in n for n in names)
