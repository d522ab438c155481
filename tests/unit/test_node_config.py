"""``pepi node`` options from a TOML file, PEPI_* variables and flags, parsed by the command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from pepi_fleet.cli import main
from pepi_fleet.node.cli import node_command


@pytest.fixture(autouse=True)
def no_pepi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """PEPI_* variables of the shell running the tests must not leak into these."""
    for name in [n for n in os.environ if n.startswith("PEPI_")]:
        monkeypatch.delenv(name)


def parse(*args: str) -> dict[str, Any]:
    """The parameters ``pepi node ARGS`` would run with (parsed, not run)."""
    with node_command.make_context("node", list(args)) as ctx:
        return dict(ctx.params)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_node_config_file_keys_are_the_flag_names(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'heartbeat = 2\nlate-tolerance = 0.25\nnode_id = "cam01"\ndata-dir = "/srv/pepi"\n'
        'resolution = "640x480"\nframe-lock = true\n',
    )
    params = parse("--config", str(config))
    assert params["heartbeat_s"] == 2.0
    assert params["late_tolerance_s"] == 0.25
    assert params["node_id"] == "cam01"
    assert params["data_dir"] == Path("/srv/pepi")
    assert params["resolution"] == (640, 480)
    assert params["frame_lock"] is True


def test_node_config_file_node_table_is_read(tmp_path: Path) -> None:
    config = write(tmp_path, '[node]\nheartbeat = 3\ndata-dir = "/srv/pepi"\n')
    assert parse("--config", str(config))["heartbeat_s"] == 3.0


def test_node_config_flag_overrides_file(tmp_path: Path) -> None:
    config = write(tmp_path, 'heartbeat = 2\ndata-dir = "/srv/pepi"\n')
    assert parse("--heartbeat", "7", "--config", str(config))["heartbeat_s"] == 7.0


def test_node_config_env_var_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEPI_HEARTBEAT", "2.5")
    monkeypatch.setenv("PEPI_DATA_DIR", "/srv/pepi")
    monkeypatch.setenv("PEPI_FRAME_LOCK", "true")
    params = parse()
    assert params["heartbeat_s"] == 2.5
    assert params["data_dir"] == Path("/srv/pepi")
    assert params["frame_lock"] is True


def test_node_config_env_var_overrides_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEPI_HEARTBEAT", "4")
    config = write(tmp_path, 'heartbeat = 2\ndata-dir = "/srv/pepi"\n')
    assert parse("--config", str(config))["heartbeat_s"] == 4.0


def test_node_config_help_names_the_env_vars_that_work() -> None:
    help_text = CliRunner().invoke(main, ["node", "--help"]).output
    assert "PEPI_HEARTBEAT" in help_text and "PEPI_DATA_DIR" in help_text


@pytest.mark.parametrize(
    ("key", "hint"), [("heartbeet", "heartbeat"), ("heartbeat_s", "heartbeat")]
)
def test_node_config_unknown_key_is_a_one_line_error(tmp_path: Path, key: str, hint: str) -> None:
    config = write(tmp_path, f'{key} = 2\ndata-dir = "/srv/pepi"\n')
    with pytest.raises(click.BadParameter):
        parse("--config", str(config))
    result = CliRunner().invoke(main, ["node", "--config", str(config)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert f"unknown key '{key}'" in errors[0]
    assert f"did you mean '{hint}'" in errors[0]
    assert "valid keys: broker," in errors[0] and "node-id" in errors[0]


def test_node_config_site_from_file_reaches_the_config(tmp_path: Path) -> None:
    from pepi_fleet.node.cli import node_config

    config = write(tmp_path, 'site = "north"\nnode-id = "cam05"\ndata-dir = "/srv/pepi"\n')
    params = parse("--config", str(config))
    assert node_config(params.pop("password_file"), params).site == "north"


def test_node_config_bad_site_is_a_usage_error() -> None:
    from pepi_fleet.node.cli import node_config

    params = parse("--site", "North Wing", "--node-id", "cam05", "--data-dir", "/srv/pepi")
    with pytest.raises(click.UsageError, match="invalid site id 'North Wing'"):
        node_config(params.pop("password_file"), params)
