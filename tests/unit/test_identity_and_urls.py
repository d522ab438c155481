"""Node id detection from cpuinfo / machine-id / host name, and broker URL parsing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pepi_fleet.core.mqtt_link import BrokerAddress, BrokerUrlError
from pepi_fleet.node.identity import detect_node_id
from pepi_fleet.schemas.ids import validate_node_id

PI_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid

Hardware\t: BCM2835
Revision\t: c03111
Serial\t\t: 000000006e74e900
Model\t\t: Raspberry Pi 4 Model B Rev 1.1
"""
MACHINE_ID = "4c4c4544003957108052b4c04f384833"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "cpuinfo", tmp_path / "machine-id"


@pytest.fixture
def hostname(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    name = ["rig-host"]
    monkeypatch.setattr(socket, "gethostname", lambda: name[0])
    return name


def test_detect_node_id_uses_pi_cpu_serial(files: tuple[Path, Path], hostname: list[str]) -> None:
    cpuinfo, machine_id = files
    cpuinfo.write_text(PI_CPUINFO)
    machine_id.write_text(MACHINE_ID + "\n")
    assert detect_node_id(cpuinfo, machine_id) == "000000006e74e900"


def test_detect_node_id_lowercases_serial(files: tuple[Path, Path], hostname: list[str]) -> None:
    cpuinfo, machine_id = files
    cpuinfo.write_text("Serial : 10000000ABCDEF01\n")
    node_id = detect_node_id(cpuinfo, machine_id)
    assert node_id == "10000000abcdef01"
    validate_node_id(node_id)


def test_detect_node_id_zero_serial_falls_back_to_machine_id(
    files: tuple[Path, Path], hostname: list[str]
) -> None:
    cpuinfo, machine_id = files
    cpuinfo.write_text(PI_CPUINFO.replace("000000006e74e900", "0000000000000000"))
    machine_id.write_text(MACHINE_ID + "\n")
    assert detect_node_id(cpuinfo, machine_id) == MACHINE_ID


def test_detect_node_id_no_serial_uses_machine_id(
    files: tuple[Path, Path], hostname: list[str]
) -> None:
    cpuinfo, machine_id = files
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n")
    machine_id.write_text(MACHINE_ID.upper() + "\n")
    node_id = detect_node_id(cpuinfo, machine_id)
    assert node_id == MACHINE_ID
    validate_node_id(node_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rig-host", "rig-host"),
        ("Pi-Rig.local", "pi-rig-local"),
        ("_My Pi_", "my-pi"),
        ("x" * 40, "x" * 32),
    ],
)
def test_detect_node_id_falls_back_to_sanitised_hostname(
    files: tuple[Path, Path], hostname: list[str], name: str, expected: str
) -> None:
    cpuinfo, machine_id = files  # neither file exists
    machine_id.write_text("uninitialized\n")
    hostname[0] = name
    node_id = detect_node_id(cpuinfo, machine_id)
    assert node_id == expected
    validate_node_id(node_id)


def test_detect_node_id_without_any_source_asks_for_node_id(
    files: tuple[Path, Path], hostname: list[str]
) -> None:
    hostname[0] = "..."
    with pytest.raises(RuntimeError, match="--node-id"):
        detect_node_id(*files)


# -- broker URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://h:1884", BrokerAddress("h", 1884)),
        ("mqtt://broker.lan", BrokerAddress("broker.lan", 1883)),
        ("h", BrokerAddress("h", 1883)),
        ("h:1884", BrokerAddress("h", 1884)),
        ("10.0.0.2", BrokerAddress("10.0.0.2", 1883)),
        ("tcp://h", BrokerAddress("h", 1883)),
        ("mqtts://h", BrokerAddress("h", 8883, tls=True)),
        ("mqtts://h:8884", BrokerAddress("h", 8884, tls=True)),
        ("ssl://h", BrokerAddress("h", 8883, tls=True)),
        ("mqtt://[::1]:1884", BrokerAddress("::1", 1884)),
    ],
)
def test_broker_address_parse(url: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.parse(url) == expected


def test_broker_address_parse_credentials_are_percent_decoded() -> None:
    address = BrokerAddress.parse("mqtts://ctl%40site:p%3Ass%2Fw%40rd@broker.lan:8884")
    assert address == BrokerAddress(
        "broker.lan", 8884, tls=True, username="ctl@site", password="p:ss/w@rd"
    )


def test_broker_address_parse_user_without_password() -> None:
    assert BrokerAddress.parse("mqtt://controller@h") == BrokerAddress(
        "h", 1883, username="controller"
    )


@pytest.mark.parametrize("url", ["http://h", "ws://h:9001", "mqtt+ws://h"])
def test_broker_address_parse_bad_scheme(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="scheme"):
        BrokerAddress.parse(url)


@pytest.mark.parametrize("url", ["mqtt://h:99999", "mqtt://h:port", "h:-1", "mqtt://h:1883x"])
def test_broker_address_parse_bad_port(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="port"):
        BrokerAddress.parse(url)


def test_broker_address_parse_port_zero_is_refused() -> None:
    with pytest.raises(BrokerUrlError, match="port"):
        BrokerAddress.parse("mqtt://h:0")


@pytest.mark.parametrize("url", ["mqtt://", "mqtt://:1883", "mqtt://user:pw@"])
def test_broker_address_parse_no_host(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="host"):
        BrokerAddress.parse(url)
