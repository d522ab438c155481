"""The shipped production broker config, unchanged, as a Debian conf.d drop-in.

``pepi broker init`` makes the certificates, logins, password file and ACL; they are
installed where the drop-in says they live, beside Debian's own main config, exactly as
the printed install steps do; mosquitto then runs on its real ports (1883, 8883) in a
network namespace of its own (see ``support.debian_broker``). No traffic leaves loopback.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
from support.debian_broker import DebianBroker, broker_binary, mosquitto_21, unavailable_reason
from support.mqtt_probe import Probe, start_probe

from pepi_fleet.broker.init import init_broker_dir

pytestmark = pytest.mark.system

NODES = ["cam01", "cam02"]
TLS_HOST = "localhost"
NOT_AUTHORIZED = 135
ACCEPTED = {0, 16}  # 16: accepted, no subscriber
WARNING_OR_ERROR = re.compile(r"(^|: )(Warning|Error)\b", re.M)


@dataclass
class Rig:
    broker: DebianBroker
    logins: Path
    ca_file: Path
    startup_output: str

    def password(self, user: str) -> str:
        return (self.logins / user / "password").read_text().strip()

    def connect(
        self,
        user: str | None,
        client_id: str,
        tls: bool = True,
        ca_file: Path | None = None,
    ) -> Probe:
        """A client inside the broker's namespace: TLS on 8883 (to ``localhost``, the name
        in the server certificate) or plain on 127.0.0.1:1883."""
        password = self.password(user) if user else None
        host, port = (TLS_HOST, 8883) if tls else ("127.0.0.1", 1883)
        ca = (ca_file or self.ca_file) if tls else None
        return self.broker.in_netns(lambda: start_probe(host, port, client_id, user, password, ca))


def installed_rig(
    tmp_path_factory: pytest.TempPathFactory,
    version: str,
    dropin: bytes | None = None,
    plugins: tuple[Path, ...] = (),
) -> Rig:
    """``pepi broker init``'s files installed as its printed steps say, on mosquitto
    ``version``; ``dropin`` replaces the shipped pepi.conf (the 2.1 plugin variant)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    made = tmp_path_factory.mktemp("init")
    init_broker_dir(made, NODES, [TLS_HOST, "127.0.0.1"])
    out = made / "broker"
    if dropin is not None:
        (out / "pepi.conf").write_bytes(dropin)
    broker = DebianBroker(tmp_path_factory.mktemp("debian"), broker_binary(version))
    # the install steps `pepi broker init` prints
    broker.install_dir("pepi", 0o700, owner="mosquitto")
    for name in ("server.key", "passwd", "acl"):
        broker.install(out / name, f"pepi/{name}", 0o600, owner="mosquitto")
    for name in ("ca.crt", "server.crt"):
        broker.install(out / name, f"pepi/{name}", 0o644, owner="mosquitto")
    broker.install(out / "pepi.conf", "conf.d/pepi.conf", 0o644)
    if plugins:  # where mosquitto, once it has dropped to its own user, can read them
        broker.install_dir("plugins", 0o755, owner="root")
        for plugin in plugins:
            broker.install(plugin, f"plugins/{plugin.name}", 0o644)
    broker.start()
    return Rig(broker, made / "logins", out / "ca.crt", broker.output())


@pytest.fixture(scope="module", params=["2.0", "2.1"], ids=["mosquitto-2.0", "mosquitto-2.1"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The shipped drop-in, unchanged, on Debian's mosquitto 2.0 and on mosquitto 2.1."""
    rig = installed_rig(tmp_path_factory, request.param)
    yield rig
    rig.broker.stop()


@pytest.fixture
def probes() -> Iterator[Callable[[Probe], Probe]]:
    """Closes every probe the test registers."""
    opened: list[Probe] = []
    yield lambda p: opened.append(p) or p  # type: ignore[func-returns-value]
    for probe in opened:
        probe.close()


def test_production_broker_dropin_is_the_shipped_file_unchanged(rig: Rig) -> None:
    shipped = resources.files("pepi_fleet.broker").joinpath("mosquitto.conf").read_bytes()
    assert (rig.broker.etc_dir / "conf.d" / "pepi.conf").read_bytes() == shipped


def test_production_broker_starts_without_warnings(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    assert not WARNING_OR_ERROR.search(rig.startup_output), rig.startup_output
    # and it does log: a connection is logged (connection_messages true)
    probe = probes(rig.connect("automation", "log-check"))
    assert probe.connect_code() == 0
    probe.close()
    log = rig.broker.output()
    assert "New client connected" in log
    assert not WARNING_OR_ERROR.search(log), log


def test_production_broker_plain_listener_is_on_loopback_only(rig: Rig) -> None:
    listening = rig.broker.listening()
    assert {address for address, port in listening if port == 1883} == {"127.0.0.1"}
    assert {address for address, port in listening if port == 8883} <= {"0.0.0.0", "[::]", "*"}
    assert {port for _, port in listening} == {1883, 8883}


def test_production_broker_tls_with_the_generated_ca(
    rig: Rig, probes: Callable[[Probe], Probe], tmp_path: Path
) -> None:
    assert probes(rig.connect("cam01", "cam01")).connect_code() == 0
    # a CA other than the rig's: the server is not trusted
    other = tmp_path / "other"
    init_broker_dir(other, ["x"], ["localhost"])
    with pytest.raises(ssl.SSLCertVerificationError):
        rig.connect("cam01", "cam01-other-ca", ca_file=other / "broker" / "ca.crt")


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_production_broker_refuses_anonymous_and_wrong_passwords(
    rig: Rig, probes: Callable[[Probe], Probe], tls: bool
) -> None:
    anonymous = probes(rig.connect(None, "anon", tls=tls))
    assert anonymous.connect_code() >= 128
    host, port = (TLS_HOST, 8883) if tls else ("127.0.0.1", 1883)
    ca = rig.ca_file if tls else None
    wrong = probes(
        rig.broker.in_netns(lambda: start_probe(host, port, "wrong", "cam01", "nope", ca))
    )
    assert wrong.connect_code() >= 128
    assert probes(rig.connect("controller", "ctl", tls=tls)).connect_code() == 0


def test_production_broker_refuses_session_takeover(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    cam02 = probes(rig.connect("cam02", "cam02"))
    assert cam02.connect_code() == 0
    intruder = probes(rig.connect("cam01", "cam02"))  # cam01's login, cam02's client id
    assert intruder.connect_code() == 0  # it gets a session: its own (cam01)
    # cam02 is still connected: a QoS 1 round trip succeeds and it was never dropped
    assert cam02.publish_code("pepi/v1/nodes/cam02/status") in ACCEPTED
    assert intruder.publish_code("pepi/v1/nodes/cam01/status") in ACCEPTED
    assert not cam02.disconnected.is_set()
    # and the intruder has no more than cam01's rights
    assert intruder.publish_code("pepi/v1/nodes/cam02/availability") == NOT_AUTHORIZED


def test_production_broker_camera_settings_written_by_controller_and_automation_only(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    cam01 = probes(rig.connect("cam01", "cam01"))
    assert cam01.connect_code() == 0
    for topic in ("pepi/v1/settings", "pepi/v1/sync/server", "pepi/v1/nodes/cam02/meter"):
        assert cam01.publish_code(topic) == NOT_AUTHORIZED, topic
    assert cam01.publish_code("pepi/v1/nodes/cam01/meter/reading") in ACCEPTED
    assert cam01.publish_code("pepi/v1/nodes/cam02/meter/reading") == NOT_AUTHORIZED
    for topic in ("pepi/v1/settings", "pepi/v1/sync/server", "pepi/v1/nodes/cam01/meter"):
        assert cam01.subscribe_codes(topic) == [1], topic

    automation = probes(rig.connect("automation", "automation"))
    assert automation.connect_code() == 0
    assert automation.publish_code("pepi/v1/settings", b'{"analogue_gain": 2}') in ACCEPTED
    assert automation.publish_code("pepi/v1/nodes/cam01/meter", b"{}") in ACCEPTED
    got = [(m.topic, m.payload) for m in (cam01.messages.get(timeout=10) for _ in range(2))]
    assert got == [
        ("pepi/v1/settings", b'{"analogue_gain": 2}'),
        ("pepi/v1/nodes/cam01/meter", b"{}"),
    ]


def test_production_broker_controller_commands_from_automation_not_nodes(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    """Home Assistant (the automation login) drives the controller's scheduled capture,
    delay and lock entities; it cannot speak for the controller, nor can a node command it."""
    cam01 = probes(rig.connect("cam01", "cam01"))
    assert cam01.connect_code() == 0
    assert cam01.publish_code("pepi/v1/controller/command") == NOT_AUTHORIZED
    automation = probes(rig.connect("automation", "automation"))
    assert automation.connect_code() == 0
    command = b'{"action": "set_adaptive_delay", "enabled": true}'
    assert automation.publish_code("pepi/v1/controller/command", command) in ACCEPTED
    for topic in ("pepi/v1/controller/state", "pepi/v1/controller/availability"):
        assert automation.publish_code(topic) == NOT_AUTHORIZED, topic


def test_production_broker_node_writes_only_its_own_subtree(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    cam01 = probes(rig.connect("cam01", "cam01"))
    assert cam01.connect_code() == 0
    for leaf in ("availability", "status", "result", "preview", "clock/pong"):
        assert cam01.publish_code(f"pepi/v1/nodes/cam01/{leaf}") in ACCEPTED, leaf
    assert cam01.publish_code("homeassistant/device/cam01/config") in ACCEPTED
    for topic in (
        "pepi/v1/nodes/cam02/status",
        "pepi/v1/nodes/cam02/availability",
        "pepi/v1/capture",
        "pepi/v1/nodes/cam02/capture",
        "pepi/v1/controller/captures",
        "homeassistant/device/cam02/config",
    ):
        assert cam01.publish_code(topic) == NOT_AUTHORIZED, topic


def test_production_broker_node_reads_triggers_and_its_own_commands(
    rig: Rig, probes: Callable[[Probe], Probe]
) -> None:
    cam01 = probes(rig.connect("cam01", "cam01"))
    assert cam01.connect_code() == 0
    for topic in (
        "pepi/v1/capture",
        "pepi/v1/nodes/cam01/capture",
        "pepi/v1/nodes/cam01/set",
        "homeassistant/status",
    ):
        assert cam01.subscribe_codes(topic) == [1], topic
    # mosquitto 2.0 grants any subscription; what a node may not read is never delivered
    cam01.subscribe_codes("pepi/v1/nodes/cam02/capture")

    automation = probes(rig.connect("automation", "automation"))
    assert automation.connect_code() == 0
    # in order: were the first delivered to cam01, it would arrive before the others
    assert automation.publish_code("pepi/v1/nodes/cam02/capture", b"not-for-cam01") in ACCEPTED
    assert automation.publish_code("pepi/v1/capture", b"scan-001") in ACCEPTED
    assert automation.publish_code("pepi/v1/nodes/cam01/capture", b"scan-002") in ACCEPTED
    got = [(m.topic, m.payload) for m in (cam01.messages.get(timeout=10) for _ in range(2))]
    assert got == [("pepi/v1/capture", b"scan-001"), ("pepi/v1/nodes/cam01/capture", b"scan-002")]


def plugin_dropin(plugins: Path) -> bytes:
    """The shipped drop-in with its 2.1 alternative taken: the two deprecated lines
    replaced by the commented plugin lines, pointing at ``plugins``."""
    lines = []
    for line in (
        resources.files("pepi_fleet.broker").joinpath("mosquitto.conf").read_text().splitlines()
    ):
        if line.startswith(("password_file ", "acl_file ")):
            continue
        if line.startswith(("#global_plugin ", "#plugin_opt_")):
            line = line[1:].replace("/usr/lib/", f"{plugins}/")
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def test_production_broker_plugin_variant_on_mosquitto_21(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On 2.1 the drop-in's commented plugin lines replace acl_file/password_file: the
    same logins and ACL hold, and mosquitto says nothing of deprecation."""
    dropin = plugin_dropin(Path("/etc/mosquitto/plugins"))
    assert b"global_plugin" in dropin and b"\nacl_file" not in dropin
    built = mosquitto_21() / "lib"
    plugins = (built / "mosquitto_password_file.so", built / "mosquitto_acl_file.so")
    rig = installed_rig(tmp_path_factory, "2.1", dropin, plugins)
    try:
        assert not WARNING_OR_ERROR.search(rig.startup_output), rig.startup_output
        anonymous = rig.connect(None, "anon")
        assert anonymous.connect_code() >= 128
        anonymous.close()
        cam01 = rig.connect("cam01", "cam01")
        try:
            assert cam01.connect_code() == 0
            assert cam01.publish_code("pepi/v1/nodes/cam01/status") in ACCEPTED
            assert cam01.publish_code("pepi/v1/nodes/cam02/status") == NOT_AUTHORIZED
            assert cam01.publish_code("pepi/v1/capture") == NOT_AUTHORIZED
        finally:
            cam01.close()
    finally:
        rig.broker.stop()
