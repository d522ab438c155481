"""docker-compose.yml: valid for docker-compose, pepi services run commands the CLI accepts."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel
from support.nodes import node_process
from support.web import controller_process, wait_ready, wait_until

from pepi_fleet.broker.access import PRODUCTION_ROOT, render_acl
from pepi_fleet.broker.runner import BrokerError, EmbeddedBroker, find_mosquitto, free_port
from pepi_fleet.cli import main
from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.node.config import NodeConfig

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
THRIFT_OVERLAY = REPO / "docker-compose.thrift.yml"
ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
COMPOSE_BIN = shutil.which("docker-compose")
CONFIG_MODELS: dict[str, type[BaseModel]] = {"node": NodeConfig, "controller": ControllerConfig}
# broker/compose.conf may differ from broker/mosquitto.conf only in the container's paths
# and listeners (no TLS inside the compose network)...
DIFFERENT_KEYS = {
    "password_file",
    "acl_file",
    "listener",
    "cafile",
    "certfile",
    "keyfile",
    "tls_version",
}
# ...and it is a whole main config, which the Debian drop-in must not be.
MAIN_CONFIG_KEYS = {"persistence_location", "log_dest"}
COMPOSE_NODES = ["cam01", "cam02", "cam03"]
COMPOSE_ACL_HEADER = (
    "# broker/acl with a section for each node of docker-compose.yml (cam01, cam02, cam03).\n"
    "# Do not edit: tests/unit/test_compose.py checks it and prints how to rewrite it.\n\n"
)

needs_compose = pytest.mark.skipif(
    COMPOSE_BIN is None, reason="docker-compose not installed: apt-get install docker-compose"
)


def compose(
    *args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on the repo's file(s); our own PEPI_* variables must not leak in."""
    assert COMPOSE_BIN is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEPI_")}
    chosen = [arg for path in files for arg in ("-f", str(path))]
    cmd = [COMPOSE_BIN, "--env-file", str(env_file), *chosen, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def load_yaml(text: str) -> Any:
    """PyYAML here if installed, else the PyYAML of the Python that runs docker-compose."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    assert COMPOSE_BIN is not None
    shebang = Path(COMPOSE_BIN).read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    if not (shebang.startswith("#!") and "python" in shebang):
        pytest.skip("no PyYAML to read 'docker-compose config' output: pip install pyyaml")
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    out = subprocess.run(
        [*shebang[2:].split(), "-c", to_json], input=text, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as docker-compose resolves them with the example env file."""
    if COMPOSE_BIN is None:
        pytest.skip("docker-compose not installed: apt-get install docker-compose")
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = load_yaml(result.stdout)
    return dict(config["services"])


def pepi_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if "build" in s}


def parse_pepi_args(args: list[str], env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """What ``pepi <args>`` would run with, parsed by the real CLI (unknown options fail)."""
    name, *rest = args
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"pepi has no command {name!r}"
    parent = click.Context(main, info_name="pepi")
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PEPI_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        ctx = command.make_context(name, list(rest), parent=parent)
    return name, dict(ctx.params)


@needs_compose
def test_compose_file_is_valid_with_the_example_env_file() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
def test_compose_without_passwords_names_the_env_file_to_pass(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "--env-file deploy/compose.env" in result.stderr


def test_dockerfile_entrypoint_is_pepi() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["pepi"\]$', dockerfile, re.M)


def test_compose_pepi_services_run_commands_the_cli_accepts(services: dict[str, Any]) -> None:
    pepi = pepi_services(services)
    assert {"controller", "cam01", "cam02", "cam03"} <= pepi.keys()
    for service_name, service in pepi.items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        command, params = parse_pepi_args([str(a) for a in service["command"]], env)
        params.pop("password_file", None)
        config = CONFIG_MODELS[command].model_validate(params).model_dump()
        assert config["password"] == env["PEPI_MQTT_PASSWORD"], service_name
        assert config["broker"] == "mqtt://broker:1883", service_name
        assert service["depends_on"]["broker"]["condition"] == "service_healthy"


def test_compose_nodes_use_their_service_name_as_id_and_address(services: dict[str, Any]) -> None:
    nodes = {}
    for service_name, service in pepi_services(services).items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        command, params = parse_pepi_args([str(a) for a in service["command"]], env)
        if command == "node":
            nodes[service_name] = params
    assert sorted(nodes) == ["cam01", "cam02", "cam03"]
    for service_name, params in nodes.items():
        assert params["node_id"] == params["advertise_host"] == service_name


def conf_directives(path: Path) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives.setdefault(key, []).append(value)
    return directives


def test_compose_conf_equals_production_conf_except_paths_and_listeners() -> None:
    production = conf_directives(REPO / "broker" / "mosquitto.conf")
    container = conf_directives(REPO / "broker" / "compose.conf")
    assert container.keys() - MAIN_CONFIG_KEYS <= production.keys()
    assert container.keys() >= MAIN_CONFIG_KEYS
    for key in production.keys() - DIFFERENT_KEYS:
        assert production[key] == container[key], key


def test_compose_conf_binds_client_ids_on_the_nodes_listener() -> None:
    lines = [line for line in (REPO / "broker" / "compose.conf").read_text().splitlines() if line]
    node_listener = lines.index("listener 1883")
    assert lines[node_listener + 1] == "use_username_as_clientid true"
    assert "listener 1884 127.0.0.1" in lines


def compose_acl() -> str:
    """What broker/compose.acl must hold."""
    return COMPOSE_ACL_HEADER + render_acl(PRODUCTION_ROOT, False, COMPOSE_NODES)


def test_compose_acl_is_the_production_acl_for_the_compose_nodes() -> None:
    path = REPO / "broker" / "compose.acl"
    assert path.read_text() == compose_acl(), (
        f"{path} is out of date: write compose_acl() of tests/unit/test_compose.py into it"
    )


def test_compose_nodes_have_acl_sections(services: dict[str, Any]) -> None:
    nodes = sorted(name for name, s in pepi_services(services).items() if s["command"][0] == "node")
    assert nodes == COMPOSE_NODES


def test_compose_broker_mounts_put_files_where_compose_conf_expects(
    services: dict[str, Any],
) -> None:
    broker = services["broker"]
    mounts = {}
    for volume in broker["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    conf = conf_directives(REPO / "broker" / "compose.conf")
    assert Path(mounts["/mosquitto/config/mosquitto.conf"]) == REPO / "broker" / "compose.conf"
    assert Path(mounts[conf["acl_file"][0]]) == REPO / "broker" / "compose.acl"
    assert Path(mounts[conf["password_file"][0]]) == REPO / "broker" / "passwd"
    assert conf["persistence_location"][0].rstrip("/") in mounts


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"mosquitto did not listen: {log.read_text()}")


def test_compose_broker_healthcheck_passes_only_with_the_password(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """broker/compose.conf loads in a real mosquitto, and the healthcheck logs in."""
    try:
        mosquitto = find_mosquitto()
    except BrokerError as exc:
        pytest.skip(str(exc))
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub not found: apt-get install mosquitto-clients")
    broker = services["broker"]
    password = str(broker["environment"]["PEPI_AUTOMATION_PASSWORD"])
    port = free_port()
    conf = (REPO / "broker" / "compose.conf").read_text()
    conf = conf.replace("/mosquitto/config/", f"{tmp_path}/").replace(
        "/mosquitto/data/", f"{tmp_path}/"
    )
    health_port = free_port()
    conf = conf.replace("\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n")
    conf = conf.replace("\nlistener 1884 127.0.0.1\n", f"\nlistener {health_port} 127.0.0.1\n")
    if os.geteuid() == 0:
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    shutil.copy(REPO / "broker" / "compose.acl", tmp_path / "pepi.acl")
    passwd = ["mosquitto_passwd", "-c", "-b", str(tmp_path / "pepi.passwd"), "automation"]
    subprocess.run([*passwd, password], check=True, capture_output=True)
    kind, check = broker["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and " -p 1884 " in check
    check = check.replace("$$", "$").replace(" -p 1884 ", f" -p {health_port} ")
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [mosquitto, "-c", str(tmp_path / "mosquitto.conf")], stdout=out, stderr=out
        )
    try:
        wait_listening(port, proc, log)
        wait_listening(health_port, proc, log)
        for given, expected_ok in ((password, True), ("wrong", False)):
            env = {**os.environ, "PEPI_AUTOMATION_PASSWORD": given}
            result = subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=10)
            assert (result.returncode == 0) is expected_ok, result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every port a service publishes."""
    out = []
    for port in service.get("ports") or []:
        host_ip, host_port, target = str(port).removesuffix("/tcp").rsplit(":", 2)
        out.append((host_ip, int(host_port), int(target)))
    return out


def test_compose_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    assert {"broker", "controller", *COMPOSE_NODES} <= services.keys()
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_page_and_previews_need_only_the_controllers_port(
    services: dict[str, Any],
) -> None:
    """The nodes' previews (http://cam01:6001/..., a name only the compose network knows)
    reach the browser through the controller's relay: no node publishes a port."""
    controller = services["controller"]
    _, params = parse_pepi_args([str(a) for a in controller["command"]], {})
    assert published(controller) == [("127.0.0.1", 8080, params["web_port"])]
    for node in COMPOSE_NODES:
        assert published(services[node]) == [], f"{node} publishes a port"
    assert published(services["broker"]) == [("127.0.0.1", 1883, 1883)]  # MQTT, not the page


@needs_compose
def test_compose_thrift_overlay_publishes_each_nodes_thrift_port_on_loopback() -> None:
    result = compose("config", files=(COMPOSE_FILE, THRIFT_OVERLAY))
    assert result.returncode == 0, result.stderr
    services = load_yaml(result.stdout)["services"]
    ports = {node: published(services[node]) for node in COMPOSE_NODES}
    assert all(len(p) == 1 and p[0][0] == "127.0.0.1" and p[0][2] == 6000 for p in ports.values())
    assert len({p[0][1] for p in ports.values()}) == len(COMPOSE_NODES), ports
    assert published(services["controller"]) == [("127.0.0.1", 8080, 8080)]


def healthcheck_code(service: dict[str, Any]) -> str:
    """The Python a pepi service's healthcheck runs (``python -c CODE``)."""
    kind, python, flag, code = service["healthcheck"]["test"]
    assert (kind, python, flag) == ("CMD", "python", "-c")
    return str(code)


def run_check(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_compose_pepi_healthchecks_pass_on_a_running_node_and_controller_only(
    services: dict[str, Any], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The nodes' and the controller's healthchecks, run against a real node and controller
    (their container ports swapped for free ones): they pass while it serves, fail after."""
    root = f"pepi-t/{uuid.uuid4().hex[:10]}"
    node = node_process(broker, root, "hc-node", tmp_path)
    ctl = controller_process(broker, root, tmp_path)
    node_code = healthcheck_code(services["cam01"])
    assert all(healthcheck_code(services[n]) == node_code for n in COMPOSE_NODES)
    node_code = node_code.replace("'127.0.0.1', 6000)", f"'127.0.0.1', {node.thrift_port})")
    node_code = node_code.replace("127.0.0.1:6001/", f"127.0.0.1:{node.stream_port}/")
    ctl_code = healthcheck_code(services["controller"])
    ctl_code = ctl_code.replace("127.0.0.1:8080/", f"127.0.0.1:{ctl.web_port}/")
    assert str(node.thrift_port) in node_code and str(node.stream_port) in node_code
    assert str(ctl.web_port) in ctl_code
    try:
        node.start()
        wait_ready(ctl.start())
        wait_until(lambda: run_check(node_code).returncode == 0, 20, "the node's healthcheck")
        assert run_check(ctl_code).returncode == 0
    finally:
        node.stop()
        ctl.stop()
    assert run_check(node_code).returncode != 0
    assert run_check(ctl_code).returncode != 0
