"""``pepi capture --out``: needs --wait; a set on another host is a clear error, not a traceback."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pepi_fleet.broker.runner import free_port
from pepi_fleet.cli import main
from pepi_fleet.controller.commands import report
from pepi_fleet.schemas.capture import CaptureStatus
from pepi_fleet.schemas.controller import CaptureSetSummary, NodeOutcome


def summary(data_dir: Path, files: list[str]) -> CaptureSetSummary:
    return CaptureSetSummary(
        capture_id="scan-1",
        triggered_at=1.0,
        completed_at=2.0,
        expected=["cam1"],
        outcomes=[NodeOutcome(node_id="cam1", status=CaptureStatus.OK, frames=len(files))],
        spread_s=0.0,
        complete=True,
        downloaded=True,
        data_dir=str(data_dir),
        files=files,
    )


def test_capture_out_without_wait_is_a_usage_error_before_triggering(tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"  # reaching it would fail differently
    result = CliRunner().invoke(
        main, ["capture", "scan-1", "--broker", dead, "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--out needs --wait" in errors[0], result.output
    assert "triggered" not in result.output
    assert not (tmp_path / "out").exists()


def test_capture_out_copies_the_sets_files_when_the_controller_is_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "controller"
    (data / "scan-1").mkdir(parents=True)
    (data / "scan-1" / "cam1_0.jpg").write_bytes(b"jpeg")
    out = tmp_path / "out"
    report(summary(data, ["scan-1/cam1_0.jpg"]), out)
    assert (out / "cam1_0.jpg").read_bytes() == b"jpeg"
    assert str(out / "cam1_0.jpg") in capsys.readouterr().out


def test_capture_out_of_a_remote_controllers_set_is_a_clear_error(tmp_path: Path) -> None:
    remote = tmp_path / "on-another-host"  # the controller's --data-dir, absent here
    with pytest.raises(click.ClickException) as caught:
        report(summary(remote, ["scan-1/cam1_0.jpg"]), tmp_path / "out")
    message = caught.value.format_message()
    assert "\n" not in message
    assert str(remote / "scan-1" / "cam1_0.jpg") in message
    assert "not on this machine" in message and "controller" in message
