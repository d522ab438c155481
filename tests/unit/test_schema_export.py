"""JSON Schema export: one valid schema file per MQTT payload model, via the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pepi_fleet.cli import main
from pepi_fleet.schemas.export import PAYLOAD_MODELS, write_json_schemas

EXPECTED = {
    "CaptureCommand",
    "CaptureResult",
    "NodeStatus",
    "NodeSettings",
    "ClockPing",
    "ClockPong",
    "CaptureSetSummary",
    "NodeSecret",
    "MeterRequest",
    "MeterReading",
    "SyncServer",
}


def _check_schemas(folder: Path) -> None:
    files = sorted(folder.glob("*.schema.json"))
    assert {f.name.removesuffix(".schema.json") for f in files} == EXPECTED
    for path in files:
        schema = json.loads(path.read_text())
        assert schema["title"] == path.name.removesuffix(".schema.json")
        assert schema["type"] == "object"
        assert schema["properties"]


def test_write_json_schemas_one_valid_file_per_model(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)
    assert len(written) == len(PAYLOAD_MODELS) == len(EXPECTED)
    assert all(p.parent == tmp_path and p.is_file() for p in written)
    _check_schemas(tmp_path)


def test_write_json_schemas_creates_the_folder_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    write_json_schemas(out)
    (out / "CaptureCommand.schema.json").write_text("stale")
    write_json_schemas(out)
    _check_schemas(out)


def test_write_json_schemas_capture_command_forbids_unknown_fields(tmp_path: Path) -> None:
    write_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "CaptureCommand.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"capture_id", "at", "cameras", "format"}
    assert schema.get("required", []) == []


def test_write_json_schemas_result_lists_statuses(tmp_path: Path) -> None:
    write_json_schemas(tmp_path)
    text = (tmp_path / "CaptureResult.schema.json").read_text()
    for status in ("ok", "late", "duplicate", "busy", "store_full", "error"):
        assert f'"{status}"' in text


def test_cli_schemas_writes_files_and_prints_paths(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = CliRunner().invoke(main, ["schemas", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = result.output.split()
    assert len(printed) == len(EXPECTED)
    assert all(Path(p).is_file() and Path(p).parent == out for p in printed)
    _check_schemas(out)


def test_cli_schemas_requires_out(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schemas"])
    assert result.exit_code == 2
    assert "--out" in result.output
