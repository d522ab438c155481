"""deploy/: the systemd units pass systemd-analyze verify, the sysusers file makes the user,
install-pi.sh's dry run writes everything under a temporary root and runs nothing, the node
config it writes is one `pepi node` accepts, and README's install command works."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from pepi_fleet.node.cli import config_defaults, node_command
from pepi_fleet.node.config import NodeConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install-pi.sh"
UNITS = ("pepi-node.service", "pepi-controller.service")
GUARDED = ("apt-get", "systemctl", "systemd-sysusers", "python3", "sed", "install", "chown")
"""Commands a dry run must print, never run."""

pytestmark = pytest.mark.skipif(
    not INSTALL.is_file(), reason="deploy/ is not shipped in the wheel; run from a checkout"
)


def dry_run(
    tmp_path: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """install-pi.sh --dry-run with every guarded command replaced by one that records calls."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    calls = tmp_path / "calls.log"
    for name in GUARDED:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stub.chmod(0o755)
    env = os.environ | {"PATH": f"{stubs}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tmp_path,
        timeout=60,
    )
    assert not calls.exists(), f"a dry run ran commands:\n{calls.read_text()}"
    return done


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    files = {"node": tmp_path / "cam01.password", "controller": tmp_path / "controller.password"}
    files["node"].write_text("node-secret\n")
    files["controller"].write_text("controller-secret\n")
    return files


def test_install_dry_run_writes_the_node_under_the_root_and_prints_the_commands(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    done = dry_run(
        tmp_path,
        "--root",
        str(root),
        "--broker",
        "mqtt://rig-broker:1883",
        "--node-id",
        "cam01",
        "--password-file",
        str(secrets["node"]),
        "--time-server",
        "rig-time",
        "--frame-lock",
        "--sync-role",
        "server",
        "--camera-count",
        "2",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for command in (
        "+ apt-get update",
        "apt-get install -y --no-install-recommends python3-venv python3-pip chrony "
        "python3-picamera2 python3-numpy",
        "+ systemctl disable --now systemd-timesyncd || true",
        "+ systemd-sysusers /etc/sysusers.d/pepi.conf",
        "+ python3 -m venv --system-site-packages /opt/pepi/venv",
        f"+ /opt/pepi/venv/bin/pip install --no-deps {REPO}",
        f"+ /opt/pepi/venv/bin/pip install -r {DEPLOY}/requirements-node.txt",
        "+ systemctl restart chrony",
        "+ systemctl enable --now pepi-node.service",
        "sudo -u pepi /opt/pepi/venv/bin/pepi doctor --config /etc/pepi/node.toml",
    ):
        assert command in out, f"{command!r} missing from:\n{out}"
    assert "pepi-controller" not in out
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [
        "etc/chrony/conf.d/pepi.conf",
        "etc/chrony/sources.d/pepi.sources",
        "etc/pepi/mqtt-password",
        "etc/pepi/node.toml",
        "etc/systemd/system/pepi-node.service",
        "etc/sysusers.d/pepi.conf",
    ]
    sources = (root / "etc/chrony/sources.d/pepi.sources").read_text()
    assert "server rig-time iburst minpoll 2 maxpoll 4" in sources
    assert "makestep 0.1 3" in (root / "etc/chrony/conf.d/pepi.conf").read_text()
    password = root / "etc/pepi/mqtt-password"
    assert password.read_text() == "node-secret\n"
    assert stat.S_IMODE(password.stat().st_mode) == 0o640
    unit = root / "etc/systemd/system/pepi-node.service"
    assert unit.read_text() == (DEPLOY / "systemd/pepi-node.service").read_text()


def test_install_dry_run_node_config_is_one_pepi_node_accepts(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    args = ["--root", str(root), "--broker", "mqtt://rig-broker:1883", "--node-id", "cam01"]
    done = dry_run(tmp_path, *args, "--password-file", str(secrets["node"]), "--frame-lock")
    assert done.returncode == 0, done.stderr
    path = root / "etc/pepi/node.toml"
    section = tomllib.loads(path.read_text())["node"]
    defaults = config_defaults(node_command, section, path)  # an unknown key raises here
    assert defaults["password_file"] == "/etc/pepi/mqtt-password"
    defaults.pop("password_file")
    config = NodeConfig.model_validate(defaults)
    assert (config.camera, config.frame_lock, config.sync_role) == ("picamera2", True, "auto")
    assert config.data_dir == Path("/var/lib/pepi/node")  # the unit's StateDirectory
    unit = (DEPLOY / "systemd/pepi-node.service").read_text()
    assert "StateDirectory=pepi/node" in unit
    assert "ExecStart=/opt/pepi/venv/bin/pepi-node --config /etc/pepi/node.toml" in unit


def test_install_dry_run_site_reaches_the_node_config(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    """A node on a bridged site's broker (pepi broker init --site): ``--site`` ends up in
    node.toml, which the unit runs ``pepi-node --config`` with, as ``pepi node --site``."""
    root = tmp_path / "root"
    args = ["--root", str(root), "--broker", "mqtts://gw-north:8883", "--node-id", "cam05"]
    done = dry_run(tmp_path, *args, "--password-file", str(secrets["node"]), "--site", "north")
    assert done.returncode == 0, done.stderr
    path = root / "etc/pepi/node.toml"
    section = tomllib.loads(path.read_text())["node"]
    assert section["site"] == "north"
    defaults = config_defaults(node_command, section, path)
    defaults.pop("password_file")
    assert NodeConfig.model_validate(defaults).site == "north"
    without = dry_run(tmp_path, "--root", str(tmp_path / "plain"), "--broker", "mqtt://rig:1883")
    assert without.returncode == 0, without.stderr
    assert "site" not in tomllib.loads((tmp_path / "plain/etc/pepi/node.toml").read_text())["node"]


def test_install_dry_run_keeps_an_existing_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/pepi").mkdir(parents=True)
    (root / "etc/pepi/node.toml").write_text("[node]\n# edited by hand\n")
    done = dry_run(tmp_path, "--root", str(root), "--broker", "mqtt://rig:1883")
    assert done.returncode == 0, done.stderr
    assert (root / "etc/pepi/node.toml").read_text() == "[node]\n# edited by hand\n"
    assert "broker" in (root / "etc/pepi/node.toml.new").read_text()
    assert "exists: kept" in done.stderr


def test_install_dry_run_controller_and_time_server(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    done = dry_run(
        tmp_path,
        "--root",
        str(root),
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--no-node",
        "--controller",
        "--controller-password-file",
        str(secrets["controller"]),
        "--serve-time",
        "192.168.10.0/24",
        "--ptp",
    )
    assert done.returncode == 0, done.stderr
    assert f"+ /opt/pepi/venv/bin/pip install {REPO}" in done.stdout
    assert "linuxptp ethtool" in done.stdout and "deploy/PTP.md" in done.stdout
    assert "+ systemctl enable --now pepi-controller.service" in done.stdout
    env = (root / "etc/pepi/controller.env").read_text()
    assert "PEPI_MQTT_USERNAME=controller\nPEPI_MQTT_PASSWORD=controller-secret\n" in env
    chrony = (root / "etc/chrony/conf.d/pepi.conf").read_text()
    assert "allow 192.168.10.0/24" in chrony and "local stratum 8" in chrony
    assert not (root / "etc/systemd/system/pepi-node.service").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --broker"),
        (["--broker", "rig:1883"], "use mqtt://"),
        (["--broker", "mqtt://rig", "--node-id", "Cam 01"], "--node-id 'Cam 01'"),
        (["--broker", "mqtt://rig", "--sync-role", "leader"], "--sync-role"),
        (["--broker", "mqtt://rig", "--controller"], "--controller-password-file"),
        (["--broker", "mqtt://rig", "--password-file", "/nonexistent"], "cannot read"),
        (["--broker", "mqtt://rig", "--bogus"], "unknown option '--bogus'"),
        (["--broker", "mqtt://rig", "--site", "North"], "--site 'North'"),
        (["--broker", "mqtt://rig", "--site"], "--site needs a value"),
        (
            ["--broker", "mqtt://rig", "--site", "north", "--no-node", "--controller"],
            "--site is a node's setting",
        ),
    ],
)
def test_install_refuses_bad_options_with_one_line_saying_why(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = dry_run(tmp_path, "--root", str(tmp_path / "root"), *args)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_install_live_run_needs_root_and_no_root_dir(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(INSTALL), "--broker", "mqtt://rig", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--root is for --dry-run" in done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_install_script_passes_shellcheck() -> None:
    done = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def systemd_root(tmp_path: Path, secrets: dict[str, Path]) -> Path:
    """A root as the installer leaves it (node and controller), with the distribution's own
    units beside ours and stand-ins for the venv's entry points pip would create."""
    root = tmp_path / "root"
    done = dry_run(
        tmp_path,
        "--root",
        str(root),
        "--broker",
        "mqtt://rig:1883",
        "--controller",
        "--controller-password-file",
        str(secrets["controller"]),
    )
    assert done.returncode == 0, done.stderr
    for lib in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(lib).is_dir():
            shutil.copytree(lib, root / lib.lstrip("/"), symlinks=True, dirs_exist_ok=True)
            break
    bin_dir = root / "opt/pepi/venv/bin"
    bin_dir.mkdir(parents=True)
    for name in ("pepi", "pepi-node"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return root


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing: apt-get install systemd (./run.sh setup does)",
)
def test_systemd_units_pass_systemd_analyze_verify(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    root = systemd_root(tmp_path, secrets)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *UNITS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on many problems it only warns about: any line it prints is a finding.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify_would_catch_a_broken_unit(
    tmp_path: Path, secrets: dict[str, Path]
) -> None:
    root = systemd_root(tmp_path, secrets)
    unit = root / "etc/systemd/system/pepi-node.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "pepi-node.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Failed to parse service restart specifier" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_pepi_user_in_group_video(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(DEPLOY / "sysusers.d/pepi.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^pepi:x:\d+:\d+:pepi-fleet:/var/lib/pepi:\S*nologin$", passwd, re.M)
    video = re.search(r"^video:x:\d+:(.*)$", (root / "etc/group").read_text(), re.M)
    assert video and "pepi" in video.group(1).split(",")


def test_requirements_node_are_pyproject_minus_numpy_the_web_stack_and_broker_tools() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    node = [
        line.strip()
        for line in (DEPLOY / "requirements-node.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()

    # numpy from apt; the web stack (and its password hashing) is the controller's;
    # cryptography is `pepi broker init`'s
    web_and_apt = {"numpy", "fastapi", "uvicorn", "websockets", "argon2-cffi", "cryptography"}
    assert sorted(node) == sorted(r for r in project["dependencies"] if name(r) not in web_and_apt)


def readme_install_commands() -> list[list[str]]:
    """The install-pi.sh command lines of README's "Running a node on a Pi" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Running a node on a Pi", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = line.split("#", 1)[0].split()
            if "deploy/install-pi.sh" in words:
                commands.append(words[words.index("deploy/install-pi.sh") + 1 :])
    return commands


def test_readme_install_command_runs_as_a_dry_run(tmp_path: Path) -> None:
    commands = readme_install_commands()
    assert commands, "README's Pi section shows no deploy/install-pi.sh command"
    for number, args in enumerate(commands):
        for i, arg in enumerate(args[:-1]):
            if arg.endswith("-file"):  # the files the README has the reader make
                (tmp_path / args[i + 1]).write_text("a-password\n")
        root = tmp_path / f"root{number}"
        done = dry_run(tmp_path, "--root", str(root), *args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert (root / "etc/systemd/system").is_dir()
