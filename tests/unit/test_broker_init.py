"""``pepi broker init``: CA, server certificate, logins, password file and ACL in one folder."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pepi_fleet.broker.access import named_users
from pepi_fleet.broker.init import InitError, init_broker_dir
from pepi_fleet.broker.pki import certificate_hosts, issued_by
from pepi_fleet.cli import main

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None,
    reason="mosquitto_passwd not found: apt-get install mosquitto",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def password(directory: Path, user: str) -> str:
    return (directory / "logins" / user / "password").read_text().strip()


def test_broker_init_makes_every_file_with_private_modes(tmp_path: Path) -> None:
    d = tmp_path / "rig"
    init_broker_dir(d, ["cam01", "cam02"], ["rig-broker", "192.168.50.2"])
    broker = d / "broker"
    assert sorted(p.name for p in broker.iterdir()) == [
        "acl",
        "ca.crt",
        "passwd",
        "pepi.conf",
        "server.crt",
        "server.key",
    ]
    for secret in (d / "ca" / "ca.key", broker / "server.key", broker / "passwd", broker / "acl"):
        assert mode(secret) == 0o600, secret
    for user in ("controller", "automation", "cam01", "cam02"):
        assert mode(d / "logins" / user / "password") == 0o600
        assert len(password(d, user)) >= 24
    assert mode(d) == 0o700
    assert not list(d.rglob("*.tmp"))


def test_broker_init_server_certificate_names_the_hosts_and_is_signed_by_the_ca(
    tmp_path: Path,
) -> None:
    init_broker_dir(tmp_path, ["cam01"], ["rig-broker", "192.168.50.2"])
    server = cert(tmp_path / "broker" / "server.crt")
    ca = cert(tmp_path / "broker" / "ca.crt")
    assert sorted(certificate_hosts(server)) == ["192.168.50.2", "rig-broker"]
    assert issued_by(server, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    assert (tmp_path / "logins" / "cam01" / "ca.crt").read_bytes() == ca_pem


def test_broker_init_password_file_is_hashed_for_every_login(tmp_path: Path) -> None:
    init_broker_dir(tmp_path, ["cam01", "cam02"], ["localhost"])
    text = (tmp_path / "broker" / "passwd").read_text()
    users = [line.split(":", 1)[0] for line in text.splitlines()]
    assert users == ["controller", "automation", "cam01", "cam02"]
    for user in users:
        assert password(tmp_path, user) not in text
    assert all(line.split(":", 1)[1].startswith("$") for line in text.splitlines())


def test_broker_init_acl_has_a_section_per_node(tmp_path: Path) -> None:
    init_broker_dir(tmp_path, ["cam01", "cam02"], ["localhost"], root="site/a")
    acl = (tmp_path / "broker" / "acl").read_text()
    assert named_users(acl) == ["controller", "automation", "cam01", "cam02"]
    assert "topic read site/a/capture" in acl
    assert "pepi/v1/" not in acl.split("\nuser controller", 1)[1]


def test_broker_init_again_keeps_the_ca_and_passwords_and_adds_nodes(tmp_path: Path) -> None:
    init_broker_dir(tmp_path, ["cam01"], ["localhost"])
    ca_key = (tmp_path / "ca" / "ca.key").read_bytes()
    server = (tmp_path / "broker" / "server.crt").read_bytes()
    cam01 = password(tmp_path, "cam01")

    report = init_broker_dir(tmp_path, ["cam01", "cam02"], ["localhost"])
    assert (tmp_path / "ca" / "ca.key").read_bytes() == ca_key
    assert (tmp_path / "broker" / "server.crt").read_bytes() == server
    assert password(tmp_path, "cam01") == cam01
    assert password(tmp_path, "cam02")
    assert tmp_path / "logins" / "cam02" / "password" in report.created

    # new host names: a new server certificate from the same CA
    report = init_broker_dir(tmp_path, ["cam02"], ["localhost", "rig"])
    new_server = cert(tmp_path / "broker" / "server.crt")
    assert sorted(certificate_hosts(new_server)) == ["localhost", "rig"]
    assert issued_by(new_server, cert(tmp_path / "ca" / "ca.crt"))
    assert report.stale_logins == ["cam01"]
    assert "cam01" not in (tmp_path / "broker" / "passwd").read_text()


def test_broker_init_client_certs_name_the_login(tmp_path: Path) -> None:
    init_broker_dir(tmp_path, ["cam01"], ["localhost"], client_certs=True)
    client = cert(tmp_path / "logins" / "cam01" / "client.crt")
    assert client.subject.rfc4514_string() == "CN=cam01"
    assert mode(tmp_path / "logins" / "cam01" / "client.key") == 0o600


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (["Cam 1"], "node id"),
        (["controller"], "controller"),
        ([], "no nodes"),
        (["a", "a"], "twice"),
    ],
)
def test_broker_init_refuses_bad_node_lists(tmp_path: Path, nodes: list[str], message: str) -> None:
    with pytest.raises(InitError, match=message):
        init_broker_dir(tmp_path, nodes, ["localhost"])


def test_broker_init_cli_prints_where_each_file_goes(tmp_path: Path) -> None:
    d = tmp_path / "rig"
    result = CliRunner().invoke(
        main, ["broker", "init", str(d), "--nodes", "cam01,cam02", "--host", "rig-broker"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{d}/broker/pepi.conf /etc/mosquitto/conf.d/pepi.conf" in out
    assert "/etc/mosquitto/pepi/" in out
    assert "mqtts://rig-broker:8883" in out
    assert "--password-file" in out
    for user in ("controller", "automation", "cam01", "cam02"):
        assert password(d, user) not in out  # passwords stay in their files


def test_broker_init_cli_needs_a_host(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["broker", "init", str(tmp_path), "--nodes", "cam01"])
    assert result.exit_code != 0
    assert "--host" in result.output
