"""The broker's ACL rendering, the production mosquitto.conf, and the port helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pepi_fleet.broker.runner import (
    PRODUCTION_ROOT,
    free_port,
    port_is_free,
    production_acl,
    render_acl,
)

CONF = Path(__file__).resolve().parents[2] / "broker" / "mosquitto.conf"


def _rules(acl: str) -> list[str]:
    return [line.strip() for line in acl.splitlines() if line.strip() and not line.startswith("#")]


def _anonymous_rules(acl: str) -> list[str]:
    """mosquitto applies the rules before the first ``user`` line to anonymous clients."""
    rules = []
    for line in _rules(acl):
        if line.startswith("user "):
            break
        rules.append(line)
    return rules


def _section(acl: str, user: str) -> list[str]:
    rules, inside = [], False
    for line in _rules(acl):
        if line.startswith(("user ", "pattern ")):
            inside = line == f"user {user}"
            if line.startswith("user "):
                continue
        if inside:
            rules.append(line)
    return rules


@pytest.mark.parametrize("anonymous", [False, True])
def test_render_acl_substitutes_the_root_in_every_rule(anonymous: bool) -> None:
    acl = render_acl("site-b/rig2", anonymous)
    rules = _rules(acl)
    assert rules
    assert not any(PRODUCTION_ROOT in line for line in rules)
    assert "topic readwrite site-b/rig2/#" in _section(acl, "controller")
    assert "topic write site-b/rig2/capture" in _section(acl, "automation")
    assert "pattern read site-b/rig2/capture" in rules


def test_render_acl_default_root_is_the_production_acl() -> None:
    assert render_acl(PRODUCTION_ROOT, anonymous_access=False) == production_acl()


def test_render_acl_keeps_user_patterns() -> None:
    rules = _rules(render_acl("t/x", False))
    patterns = [line for line in rules if line.startswith("pattern ")]
    assert "pattern read t/x/nodes/%u/capture" in patterns
    assert "pattern read t/x/nodes/%u/set" in patterns
    assert "pattern write t/x/nodes/%u/availability" in patterns
    assert "pattern write t/x/nodes/%u/status" in patterns
    assert "pattern write t/x/nodes/%u/result" in patterns
    assert "pattern write homeassistant/device/%u/config" in patterns
    # a node writes nothing outside its own subtree (and its own discovery)
    for line in patterns:
        if line.startswith("pattern write"):
            assert "%u" in line, line


def test_render_acl_keeps_test_root_wildcards() -> None:
    rules = _rules(render_acl("pepi-t/+", True))
    assert "pattern write pepi-t/+/nodes/%u/result" in rules
    assert "topic read pepi-t/+/#" in rules


def test_render_acl_without_anonymous_has_no_anonymous_rules() -> None:
    assert _anonymous_rules(render_acl("t/x", anonymous_access=False)) == []


def test_render_acl_anonymous_reads_root_and_writes_only_triggers_and_clock_pings() -> None:
    anon = _anonymous_rules(render_acl("t/x", anonymous_access=True))
    writes = {line.split()[-1] for line in anon if line.split()[1] in ("write", "readwrite")}
    reads = {line.split()[-1] for line in anon if line.split()[1] in ("read", "readwrite")}
    # clock pings let `pepi nodes` measure offsets without a login on the demo broker
    assert writes == {"t/x/capture", "t/x/nodes/+/capture", "t/x/nodes/+/clock/ping"}
    assert "t/x/#" in reads
    assert all(line.startswith("topic ") for line in anon)
    assert all(line.split()[-1].startswith(("t/x/", "homeassistant/")) for line in anon)


def test_render_acl_anonymous_keeps_the_named_users() -> None:
    with_anon = render_acl("t/x", anonymous_access=True)
    without = render_acl("t/x", anonymous_access=False)
    assert with_anon.endswith(without)
    assert _section(with_anon, "controller") == _section(without, "controller")


# -- production mosquitto.conf ------------------------------------------------------------------


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            settings.setdefault(key, []).append(value.strip())
    return settings


def test_production_conf_requires_login_and_acl() -> None:
    settings = _settings()
    assert settings["allow_anonymous"] == ["false"]
    assert len(settings["password_file"]) == 1 and settings["password_file"][0]
    assert len(settings["acl_file"]) == 1 and settings["acl_file"][0]


def test_production_conf_persists_and_limits_packets() -> None:
    settings = _settings()
    assert settings["persistence"] == ["true"]
    (size,) = settings["max_packet_size"]
    assert 0 < int(size) <= 16 * 1024 * 1024


def test_production_conf_has_commented_tls_listener() -> None:
    text = CONF.read_text()
    commented = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    assert "listener 8883" in commented
    assert any(line.startswith("certfile ") for line in commented)
    assert any(line.startswith("keyfile ") for line in commented)
    assert "8883" not in " ".join(_settings().get("listener", []))


# -- ports --------------------------------------------------------------------------------------


def test_free_port_is_free_and_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert port_is_free(port)


def test_port_is_free_false_while_something_listens() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)
