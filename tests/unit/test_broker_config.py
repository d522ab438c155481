"""The broker's ACL rendering, the production mosquitto.conf, port and child-process helpers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pepi_fleet.broker.access import (
    NODE_READS,
    PRODUCTION_ROOT,
    named_users,
    node_section,
    production_acl,
    render_acl,
)
from pepi_fleet.broker.runner import EmbeddedBroker, free_port, port_is_free, terminate
from pepi_fleet.node.camera.base import CapturedFrame
from pepi_fleet.node.preview import thumbnail_jpeg

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
    assert "pattern read site-b/rig2/nodes/%u/capture" in rules


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
    # every pattern names the user: mosquitto 2.0 warns at start about one that does not,
    # and a node writes nothing outside its own subtree (and its own discovery)
    for line in patterns:
        assert "%u" in line, line


def test_render_acl_keeps_test_root_wildcards() -> None:
    rules = _rules(render_acl("pepi-t/+", True, ["cam1"]))
    assert "pattern write pepi-t/+/nodes/%u/result" in rules
    assert "topic read pepi-t/+/#" in rules
    assert "topic read pepi-t/+/capture" in _section(render_acl("pepi-t/+", True, ["cam1"]), "cam1")


def test_render_acl_gives_each_node_the_trigger_settings_and_home_assistant_birth() -> None:
    acl = render_acl("t/x", False, ["cam01", "cam02"])
    for node in ("cam01", "cam02"):
        assert _section(acl, node) == [
            "topic read t/x/capture",
            "topic read t/x/settings",
            "topic read t/x/sync/server",
            "topic read homeassistant/status",
        ]
    assert named_users(acl) == ["controller", "automation", "cam01", "cam02"]
    # the production ACL's comment shows the same section
    comment = [line[1:].strip() for line in production_acl().splitlines() if line.startswith("# ")]
    expected = node_section(PRODUCTION_ROOT, "<node-id>").splitlines()
    start = comment.index(expected[0])
    assert comment[start : start + len(expected)] == expected
    assert len(NODE_READS) == len(expected) - 1


def test_render_acl_refuses_a_node_named_like_a_user() -> None:
    with pytest.raises(ValueError, match="controller"):
        render_acl("t/x", False, ["cam01", "controller"])


def test_embedded_broker_acl_has_a_section_per_node_login(tmp_path: Path) -> None:
    broker = EmbeddedBroker(root="t/x", workdir=tmp_path)
    broker.add_user("controller")
    broker.add_user("cam7")
    acl = (tmp_path / "acl").read_text()
    assert "topic read t/x/capture" in _section(acl, "cam7")
    assert named_users(acl).count("controller") == 1


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


def test_production_conf_is_a_debian_conf_d_dropin() -> None:
    """Debian's main config sets these and includes conf.d: repeating them stops mosquitto
    (``Duplicate persistence_location value``) or logs twice."""
    settings = _settings()
    for key in ("persistence_location", "log_dest", "pid_file", "include_dir", "user"):
        assert key not in settings, key
    # deprecated by mosquitto 2.1 (removed in 3.0), and not needed
    assert "per_listener_settings" not in settings


def test_production_conf_persists_and_limits_packets() -> None:
    settings = _settings()
    assert settings["persistence"] == ["true"]
    (size,) = settings["max_packet_size"]
    # explicit, and within mosquitto 2.1's default (2,000,000 bytes)
    assert 0 < int(size) <= 2_000_000


def _listeners() -> dict[str, list[str]]:
    """Each listener line with the options that follow it."""
    listeners: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in CONF.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("listener "):
            current = listeners.setdefault(line, [])
        elif current is not None and line.split()[0] in LISTENER_OPTIONS:
            current.append(line)
    return listeners


LISTENER_OPTIONS = {"cafile", "certfile", "keyfile", "tls_version", "use_username_as_clientid"}


def test_production_conf_plain_listener_on_loopback_and_tls_with_bound_client_ids() -> None:
    listeners = _listeners()
    assert set(listeners) == {"listener 1883 127.0.0.1", "listener 8883"}
    tls = listeners["listener 8883"]
    for option in ("cafile", "certfile", "keyfile"):
        assert any(line.startswith(option + " /etc/mosquitto/pepi/") for line in tls), option
    assert "use_username_as_clientid true" in tls
    assert "tls_version tlsv1.2" in tls
    # nothing but the listener lines themselves may set these (before any listener
    # mosquitto would open a default listener on all interfaces)
    first = CONF.read_text().index("\nlistener ")
    head = [line for line in CONF.read_text()[:first].splitlines() if not line.startswith("#")]
    assert not any(line.split()[0] in LISTENER_OPTIONS for line in head if line.strip())


def test_production_conf_documents_the_2_1_plugins_for_the_same_files() -> None:
    text = CONF.read_text()
    settings = _settings()
    commented = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    assert f"plugin_opt_password_file {settings['password_file'][0]}" in commented
    assert f"plugin_opt_acl_file {settings['acl_file'][0]}" in commented
    plugins = [line for line in commented if line.startswith("global_plugin ")]
    assert [p.rsplit("/", 1)[1] for p in plugins] == [
        "mosquitto_password_file.so",
        "mosquitto_acl_file.so",
    ]


def test_production_conf_packet_limit_fits_the_largest_preview() -> None:
    """The largest thing a node publishes is the JPEG preview; random noise is the worst
    case for JPEG size."""
    (size,) = _settings()["max_packet_size"]
    noise = np.random.default_rng(1).integers(0, 256, (3040, 4056, 3), dtype=np.uint8)
    frame = CapturedFrame(camera=0, timestamp=0.0, pixels=noise, model="noise")
    overhead = 1024  # fixed header, topic, properties
    assert len(thumbnail_jpeg(frame)) + overhead < int(size)


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


# -- stopping children --------------------------------------------------------------------------


def _child(code: str) -> subprocess.Popen[bytes]:
    """A Python child that prints once its handlers are set, so a signal cannot race them."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


def test_terminate_stops_a_child_with_sigterm() -> None:
    proc = _child("import time; print('ready', flush=True); time.sleep(60)")
    assert terminate(proc)
    assert proc.returncode == -signal.SIGTERM


def test_terminate_kills_a_child_that_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = _child(code)
    assert terminate(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_terminate_leaves_an_exited_child_alone() -> None:
    proc = _child("print('ready', flush=True)")
    proc.wait()
    assert not terminate(proc)
    assert proc.returncode == 0
