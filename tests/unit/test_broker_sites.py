"""``pepi broker init --site``: a broker per site, its bridge to the central one, the ACLs."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_broker_init import cert, mode, password

from pepi_fleet.broker.access import bridge_section, named_users, render_acl
from pepi_fleet.broker.bridge import (
    SiteSpec,
    parse_site_option,
    render_bridge_conf,
    shipped_bridge_conf,
)
from pepi_fleet.broker.init import InitError, init_broker_dir
from pepi_fleet.broker.pki import certificate_hosts, issued_by
from pepi_fleet.cli import main
from pepi_fleet.schemas.errors import PepiError

needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None,
    reason="mosquitto_passwd not found: apt-get install mosquitto",
)
NORTH = SiteSpec("north", ("cam05", "cam06"), ("gw-north",))


def settings(conf: str) -> list[tuple[str, str]]:
    """The (option, value) lines of a mosquitto config, comments left out."""
    pairs = []
    for line in conf.splitlines():
        if line.strip() and not line.startswith("#"):
            option, _, value = line.partition(" ")
            pairs.append((option, value))
    return pairs


def test_bridge_conf_fills_every_placeholder_and_the_root() -> None:
    conf = render_bridge_conf("north", "rig-broker:8883", "/etc/ca.crt", "s3cret", "rig/v2")
    assert "@" not in "".join(v for _, v in settings(conf))
    opts = dict(settings(conf))
    assert opts["connection"] == "pepi-north"
    assert opts["address"] == "rig-broker:8883"
    assert opts["bridge_cafile"] == "/etc/ca.crt"
    assert opts["remote_username"] == opts["remote_clientid"] == "bridge-north"
    assert opts["remote_password"] == "s3cret"
    assert opts["notification_topic"] == "rig/v2/sites/north/bridge"
    assert "pepi/v1" not in "".join(v for _, v in settings(conf))


def test_bridge_conf_chosen_settings() -> None:
    """The settings the design rests on (see the comments in broker/bridge.conf)."""
    opts = dict(settings(shipped_bridge_conf()))
    assert opts["bridge_protocol_version"] == "mqttv50"  # trigger expiry crosses
    assert opts["cleansession"] == "true"  # no triggers queued for late delivery
    assert opts["notifications"] == "true"
    assert opts["try_private"] == "true"
    assert opts["restart_timeout"] == "2 30"


def test_bridge_conf_carries_what_each_end_needs() -> None:
    topics = {
        v.split()[0]: v.split()[1] for k, v in settings(shipped_bridge_conf()) if k == "topic"
    }
    for leaf in ("availability", "status", "result", "secret", "clock/pong"):
        assert topics[f"nodes/+/{leaf}"] == "out", leaf
    for leaf in ("capture", "set", "clock/ping"):
        assert topics[f"nodes/+/{leaf}"] == "in", leaf
    assert topics["capture"] == "in"
    assert topics["homeassistant/device/+/config"] == "out"
    assert topics["homeassistant/status"] == "in"


@pytest.mark.parametrize(
    ("address", "password"), [("", "pw"), ("host 1883", "pw"), ("host:8883", "p w")]
)
def test_bridge_conf_refuses_values_that_would_break_it(address: str, password: str) -> None:
    with pytest.raises(PepiError):
        render_bridge_conf("north", address, "/etc/ca.crt", password)


def test_bridge_acl_section_confines_the_bridge_to_its_sites_nodes() -> None:
    section = bridge_section("pepi/v1", "north", ["cam05"])
    lines = section.splitlines()
    assert lines[0] == "user bridge-north"
    assert "topic write pepi/v1/sites/north/bridge" in lines
    assert "topic read pepi/v1/capture" in lines
    assert "topic write pepi/v1/nodes/cam05/status" in lines
    assert "topic read pepi/v1/nodes/cam05/capture" in lines
    assert "topic write homeassistant/device/cam05/config" in lines
    assert not any("cam06" in line or "#" in line or "+" in line for line in lines)
    acl = render_acl("pepi/v1", False, ["cam01"], {"north": ["cam05"]})
    assert named_users(acl)[-2:] == ["cam01", "bridge-north"]


def test_parse_site_option() -> None:
    assert parse_site_option("north=cam05, cam06") == ("north", ["cam05", "cam06"])
    for bad in ("north", "north=", "North=cam05", "north=Cam 5"):
        with pytest.raises(PepiError):
            parse_site_option(bad)


@needs_passwd
def test_broker_init_site_makes_a_bridged_broker(tmp_path: Path) -> None:
    d = tmp_path / "rig"
    report = init_broker_dir(d, ["cam01"], ["rig-broker"], sites=[NORTH])
    assert report.central_address == "rig-broker:8883"
    site = d / "sites" / "north" / "broker"
    assert sorted(p.name for p in site.iterdir()) == [
        "acl",
        "ca.crt",
        "passwd",
        "pepi-bridge.conf",
        "pepi.conf",
        "server.crt",
        "server.key",
    ]
    for secret in ("acl", "passwd", "pepi-bridge.conf", "server.key"):
        assert mode(site / secret) == 0o600, secret
    assert stat.S_IMODE((d / "sites").stat().st_mode) == 0o700
    assert certificate_hosts(cert(site / "server.crt")) == ["gw-north"]
    assert issued_by(cert(site / "server.crt"), cert(d / "ca" / "ca.crt"))
    bridge = dict(settings((site / "pepi-bridge.conf").read_text()))
    assert bridge["remote_password"] == password(d, "bridge-north")
    assert bridge["address"] == "rig-broker:8883"
    # the site broker knows its own nodes only; the central one the bridge, not the nodes
    assert [u.split(":")[0] for u in (site / "passwd").read_text().split()] == ["cam05", "cam06"]
    central = [u.split(":")[0] for u in (d / "broker" / "passwd").read_text().split()]
    assert central == ["controller", "automation", "cam01", "bridge-north"]
    assert "user bridge-north" in (d / "broker" / "acl").read_text()
    assert named_users((site / "acl").read_text())[-2:] == ["cam05", "cam06"]
    # the site's nodes read its bridge state there (to learn their site); the central
    # broker's nodes read no site's, or cam01 would take north for its own
    site_rules = uncommented((site / "acl").read_text())
    assert site_rules.count("topic read pepi/v1/sites/+/bridge") == 2
    assert "sites/+/bridge" not in uncommented((d / "broker" / "acl").read_text())


@needs_passwd
def test_broker_init_site_again_keeps_the_bridge_password(tmp_path: Path) -> None:
    d = tmp_path / "rig"
    init_broker_dir(d, ["cam01"], ["rig-broker"], sites=[NORTH])
    before = password(d, "bridge-north")
    more = SiteSpec("north", ("cam05", "cam06", "cam07"), ("gw-north",))
    init_broker_dir(d, ["cam01"], ["rig-broker"], sites=[more], central_address="10.0.0.1:8883")
    assert password(d, "bridge-north") == before
    conf = (d / "sites" / "north" / "broker" / "pepi-bridge.conf").read_text()
    assert dict(settings(conf))["address"] == "10.0.0.1:8883"
    assert "cam07" in (d / "broker" / "acl").read_text()


@pytest.mark.parametrize(
    ("nodes", "sites", "message"),
    [
        (["cam05"], [NORTH], "twice"),
        ([], [NORTH, NORTH], "site appears twice"),
        ([], [SiteSpec("north", ("cam05",), ())], "--site-host north="),
        (["bridge-north"], [NORTH], "bridge"),
        ([], [SiteSpec("north", ("controller",), ("gw",))], "controller"),
        ([], [SiteSpec("North", ("cam05",), ("gw",))], "site id"),
    ],
)
def test_broker_init_refuses_bad_sites(
    tmp_path: Path, nodes: list[str], sites: list[SiteSpec], message: str
) -> None:
    with pytest.raises(InitError, match=message):
        init_broker_dir(tmp_path, nodes, ["rig-broker"], sites=sites, mosquitto_passwd="/bin/true")


@needs_passwd
def test_broker_init_cli_sites(tmp_path: Path) -> None:
    d = tmp_path / "rig"
    args = ["broker", "init", str(d), "--host", "rig-broker", "--site", "north=cam05,cam06"]
    result = CliRunner().invoke(main, [*args, "--site-host", "north=gw-north"])
    assert result.exit_code == 0, result.output
    assert "pepi-bridge.conf /etc/mosquitto/conf.d/pepi-bridge.conf" in result.output
    assert "pepi node --node-id cam05 --site north --broker mqtts://gw-north:8883" in result.output
    assert "install-pi.sh --node-id cam05 --site north --broker mqtts://gw-north:8883" in (
        result.output
    )
    assert password(d, "bridge-north") not in result.output
    result = CliRunner().invoke(main, [*args, "--site-host", "south=gw"])
    assert result.exit_code != 0
    assert "no --site south" in result.output


def uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
