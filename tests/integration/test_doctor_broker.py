"""``pepi doctor`` on a node with the fake picamera2 against a real mosquitto (project ACL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.fake_camera import install_fake_picamera2

from pepi_fleet.broker.runner import EmbeddedBroker, free_port
from pepi_fleet.cli import main
from pepi_fleet.node.clock_report import ClockReport
from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.doctor import run_checks

SYNCED = ClockReport("chrony", True, offset_s=2e-5, error_s=1.5e-4, server="rig-time")


def node_args(broker: EmbeddedBroker, tmp_path: Path, node_id: str, password: str) -> list[str]:
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    return [
        "--broker",
        broker.url,
        "--node-id",
        node_id,
        "--password-file",
        str(password_file),
        "--camera",
        "picamera2",
        "--camera-count",
        "2",
        "--data-dir",
        str(tmp_path / "data"),
        "--thrift-host",
        "127.0.0.1",
        "--thrift-port",
        str(free_port()),
        "--stream-port",
        str(free_port()),
        "--min-free-bytes",
        "0",
        "--max-store-bytes",
        "1000",
    ]


@pytest.fixture
def node_id() -> str:
    return f"doc{uuid.uuid4().hex[:6]}"


def test_pepi_doctor_ready_node_passes_every_check(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_id: str
) -> None:
    install_fake_picamera2(monkeypatch, cameras=["imx477", "imx708"])
    creds = broker.add_user(node_id)
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", *node_args(broker, tmp_path, node_id, creds.password)])
    out = result.output
    assert "OK    camera       2 camera(s): imx477, imx708" in out, out
    assert f"OK    broker       connected to 127.0.0.1:{broker.port} as {node_id}" in out, out
    assert "OK    Thrift port" in out and "OK    MJPEG port" in out and "OK    disk" in out, out
    # This container's clock may be unsynchronised: that, and only that, may fail here.
    failing = [line for line in out.splitlines() if line.startswith("  FAIL")]
    assert all(" clock " in line for line in failing), out
    assert result.exit_code == (1 if failing else 0)


def test_pepi_doctor_run_checks_with_a_synchronised_clock_is_ready(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_id: str
) -> None:
    install_fake_picamera2(monkeypatch)
    creds = broker.add_user(node_id)
    config = NodeConfig(
        broker=broker.url,
        node_id=node_id,
        password=creds.password,
        camera="picamera2",
        data_dir=tmp_path,
        thrift_port=0,
        stream_port=0,
        min_free_bytes=0,
        max_store_bytes=1,
    )
    checks = run_checks(config, clock=lambda: SYNCED)
    assert [c.status for c in checks] == ["ok"] * 6, checks


def test_pepi_doctor_wrong_password_fails_with_what_to_fix(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_id: str
) -> None:
    install_fake_picamera2(monkeypatch, cameras=["imx477", "imx708"])
    broker.add_user(node_id)
    args = node_args(broker, tmp_path, node_id, "not-the-password")
    result = CliRunner().invoke(main, ["doctor", *args, "--timeout", "3"])
    assert result.exit_code == 1
    assert "FAIL  broker       broker refused the connection" in result.output, result.output
    assert f"login for {node_id} (mosquitto_passwd)" in result.output


def test_pepi_doctor_unreachable_broker(tmp_path: Path, node_id: str) -> None:
    args = ["--broker", f"mqtt://127.0.0.1:{free_port()}", "--node-id", node_id]
    args += ["--data-dir", str(tmp_path), "--thrift-port", "0", "--stream-port", "0"]
    result = CliRunner().invoke(main, ["doctor", *args, "--timeout", "1"])
    assert result.exit_code == 1
    assert "cannot reach the MQTT broker" in result.output
    assert "is the broker running and reachable" in result.output


def test_pepi_doctor_reads_the_node_config_file(
    broker: EmbeddedBroker, tmp_path: Path, node_id: str
) -> None:
    creds = broker.add_user(node_id)
    (tmp_path / "password").write_text(creds.password)
    config = tmp_path / "node.toml"
    config.write_text(
        "[node]\n"
        f'broker = "{broker.url}"\nnode-id = "{node_id}"\n'
        f'password-file = "{tmp_path / "password"}"\ndata-dir = "{tmp_path / "data"}"\n'
        "thrift-port = 0\nstream-port = 0\n"
    )
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    assert f"pepi doctor: node {node_id}" in result.output
    assert "OK    broker" in result.output, result.output
