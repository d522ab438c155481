"""``--ca-file`` (an mqtts:// broker with a private CA) reaches the MQTT link of every command."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pepi_fleet.cli import main
from pepi_fleet.controller import oneshot
from pepi_fleet.controller.commands import controller_command, controller_config
from pepi_fleet.controller.service import Controller
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions

# A self-signed test CA (EC P-256, valid until 2126): paho loads it when the link is built.
CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUeaPaRllyBzvrDWVMy40BI4YbHGQwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwScGVwaS1mbGVldCB0ZXN0IENBMCAXDTI2MTIwMzEwNTEyMloY
DzIxMjYxMTA5MTA1MTIyWjAdMRswGQYDVQQDDBJwZXBpLWZsZWV0IHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATg9k5KARzfi5KMYD8zmZ2drq9YeChv
uwGIVDxV6ibFf8cqgC2XxYfG3qo5O5u1sFl3b77qcVwYVGyKJwiEYD8Po1MwUTAd
BgNVHQ4EFgQUGhIZt0e4Vfq28bUjvyftdqf76jAwHwYDVR0jBBgwFoAUGhIZt0e4
Vfq28bUjvyftdqf76jAwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiAv/e1JN257EvbqCRJKmFlxpX9TmthmfoxjCMjy4IZl5QIhAId3NbRWqqMD9EqA
iP7ayP5e4qdUmRb11bb8S2MyB+7f
-----END CERTIFICATE-----
"""


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    path.write_text(CA_PEM)
    return path


def given(how: str, ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``--ca-file`` on the command line, or ``PEPI_CA_FILE`` in the environment."""
    if how == "env":
        monkeypatch.setenv("PEPI_CA_FILE", str(ca_file))
        return []
    monkeypatch.delenv("PEPI_CA_FILE", raising=False)
    return ["--ca-file", str(ca_file)]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_ca_file_reaches_the_controller_link(
    how: str, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--broker", "mqtts://broker.lan", "--data-dir", str(tmp_path / "data")]
    ctx = controller_command.make_context("controller", [*args, *given(how, ca_file, monkeypatch)])
    config = controller_config(ctx.params)
    assert config.ca_file == ca_file
    controller = Controller(config)  # builds the TLS link: paho loads the CA here
    try:
        assert controller.link.address.tls
        assert controller.link.options.ca_file == str(ca_file)
    finally:
        controller.downloader.close()
        controller.ledger.close()


class RecordingLink:
    """Stands in for MqttLink in a CLI session: records its options, never connects."""

    built: list[LinkOptions] = []

    def __init__(
        self,
        address: BrokerAddress,
        options: LinkOptions,
        on_message: Callable[[InboundMessage], None],
    ) -> None:
        self.address = address
        self.last_error = "no TLS broker in a unit test"
        RecordingLink.built.append(options)

    def start(self) -> None:
        pass

    def wait_connected(self, timeout: float) -> bool:
        return False

    def stop(self) -> None:
        pass


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port that accepts TCP (the session checks the broker is reachable first)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("command", [["nodes"], ["nodes", "--json"], ["capture", "scan-1"]])
def test_ca_file_reaches_the_cli_session_link(
    how: str,
    command: list[str],
    ca_file: Path,
    listening_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oneshot, "MqttLink", RecordingLink)
    RecordingLink.built.clear()
    args = [*command, "--broker", f"mqtts://127.0.0.1:{listening_port}"]
    result = CliRunner().invoke(main, [*args, *given(how, ca_file, monkeypatch)])
    assert result.exit_code == 1, result.output
    assert "--ca-file" in result.output  # the hint when the broker does not accept us
    [options] = RecordingLink.built
    assert options.ca_file == str(ca_file)


def test_ca_file_missing_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["nodes", "--ca-file", str(tmp_path / "nope.pem")])
    assert result.exit_code == 2
    assert "--ca-file" in result.output and "does not exist" in result.output
