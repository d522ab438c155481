"""``pepi doctor``: is this node ready to capture, and if not, what to fix.

Checks the camera (detected, without opening it: a running node keeps working), the clock
(chrony, systemd-timesyncd or the kernel), the broker (connect and disconnect with the
node's own credentials), the Thrift and MJPEG ports, and the data directory's disk.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from pepi_fleet.core.mqtt_link import BrokerAddress, BrokerUrlError, LinkOptions, MqttLink
from pepi_fleet.node.cli import node_command, node_config
from pepi_fleet.node.clock_report import ClockReport, read_clock_report
from pepi_fleet.node.config import NodeConfig

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
CLOCK_ERROR_WARN_S = 0.001
"""Frame-level sync across nodes needs clocks within a small part of a frame (33 ms at 30 fps)."""
BROKER_TIMEOUT_S = 5.0
TIME_SERVER_FIX = (
    "install chrony and point it at the rig's time server: "
    "sudo deploy/install-pi.sh --time-server HOST (or edit /etc/chrony/sources.d/pepi.sources), "
    "then 'chronyc sources -v'"
)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    message: str
    fix: str | None = None


def _can_open(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK)


def check_camera(
    config: NodeConfig, devices: Path = Path("/dev"), can_open: Callable[[Path], bool] = _can_open
) -> Check:
    """The configured cameras are there (listed by libcamera, not opened) and accessible."""
    if config.camera == "synthetic":
        return Check("camera", "ok", f"synthetic camera x{config.camera_count} (no hardware)")
    if config.camera == "folder":
        folder = config.folder
        if folder is None or not folder.is_dir() or not any(folder.iterdir()):
            return Check("camera", "fail", f"no images in {folder}", "give --folder DIR of images")
        return Check("camera", "ok", f"folder camera replaying {folder}")
    try:
        from picamera2 import Picamera2
    except ImportError:
        return Check(
            "camera",
            "fail",
            "picamera2 is not installed",
            "sudo apt install python3-picamera2, and a venv made with --system-site-packages",
        )
    try:
        models = [str(c.get("Model", "?")) for c in Picamera2.global_camera_info()]
    except Exception as exc:  # libcamera fails in many ways
        return Check("camera", "fail", f"libcamera could not list cameras: {exc}")
    if len(models) < config.camera_count:
        return Check(
            "camera",
            "fail",
            f"libcamera sees {len(models)} camera(s), {config.camera_count} configured",
            "check the ribbon cables (power off first) and 'rpicam-hello --list-cameras'; "
            "a Global Shutter or third-party camera may need its dtoverlay= in "
            "/boot/firmware/config.txt",
        )
    blocked = [str(p) for p in _camera_devices(devices) if not can_open(p)]
    if blocked:
        return Check(
            "camera",
            "fail",
            f"this user cannot open {', '.join(blocked[:3])}",
            "run the node as a member of group video (the pepi-node service's user is)",
        )
    return Check("camera", "ok", f"{len(models)} camera(s): {', '.join(models)}")


def _camera_devices(devices: Path) -> list[Path]:
    found = sorted(devices.glob("media*")) + sorted(devices.glob("video*"))
    heaps = devices / "dma_heap"
    if heaps.is_dir():
        found += sorted(heaps.iterdir())
    return found


def check_clock(report: ClockReport) -> Check:
    """Synchronised, by what, and how far off."""
    where = f" to {report.server}" if report.server else ""
    if report.synced is None:
        return Check(
            "clock", "warn", "cannot tell whether the clock is synchronised", TIME_SERVER_FIX
        )
    if not report.synced:
        return Check("clock", "fail", f"not synchronised ({report.source})", TIME_SERVER_FIX)
    figures = []
    if report.offset_s is not None:
        figures.append(f"offset {report.offset_s * 1e3:+.3f} ms")
    if report.error_s is not None:
        figures.append(f"error ±{report.error_s * 1e3:.3f} ms")
    summary = f"synchronised by {report.source}{where}" + (
        f": {', '.join(figures)}" if figures else ""
    )
    if report.source == "timesyncd":
        return Check(
            "clock",
            "warn",
            summary + "; systemd-timesyncd is SNTP, only ms-accurate",
            TIME_SERVER_FIX,
        )
    if report.error_s is not None and report.error_s > CLOCK_ERROR_WARN_S:
        return Check(
            "clock",
            "warn",
            summary,
            "use a time server on the rig's own wired network (PTP for µs: see README)",
        )
    return Check("clock", "ok", summary)


def check_broker(config: NodeConfig, timeout: float = BROKER_TIMEOUT_S) -> Check:
    """Connect with the node's credentials (as another client id), then disconnect."""
    try:
        address = BrokerAddress.parse(config.broker)
    except BrokerUrlError as exc:
        return Check("broker", "fail", str(exc), "fix --broker (mqtt://host:1883)")
    node = config.node_id
    username = config.username or (node if config.password else None)
    link = MqttLink(
        address,
        LinkOptions(
            client_id=f"{node}-doctor",  # never takes over the running node's session
            username=username,
            password=config.password,
            ca_file=str(config.ca_file) if config.ca_file else None,
        ),
        on_message=lambda _msg: None,
    )
    where = f"{address.host}:{address.port}"
    try:
        link.start()
        connected = link.wait_connected(timeout)
    finally:
        link.stop()
    who = f" as {username or address.username}" if (username or address.username) else ""
    if connected:
        return Check("broker", "ok", f"connected to {where}{who}")
    error = link.last_error or f"no answer from {where} within {timeout:g} s"
    if error.startswith("broker refused"):
        return Check(
            "broker",
            "fail",
            f"{error}{who}",
            f"check the password (--password-file) and that the broker has a login for "
            f"{username or 'this node'} (mosquitto_passwd)",
        )
    return Check(
        "broker",
        "fail",
        error,
        "is the broker running and reachable from here? check --broker and the firewall",
    )


def check_port(config: NodeConfig, name: str, port: int) -> Check:
    """Whether the node can listen on ``port`` (or its own running agent already does)."""
    label = f"{name} port"
    if port < 0:
        return Check(label, "ok", "disabled")
    if port == 0:
        return Check(label, "ok", "any free port (reported in the status)")
    host = config.thrift_host
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Check(label, "fail", f"cannot listen on {host}:{port}: {exc.strerror}")
        if _our_node_listens(config, name, port):
            return Check(label, "ok", f"{port} in use by this node's running agent")
        return Check(
            label,
            "fail",
            f"{port} is in use by another program",
            f"find it with 'sudo ss -ltnp sport = :{port}' or choose another port",
        )
    return Check(label, "ok", f"{port} free")


def _our_node_listens(config: NodeConfig, name: str, port: int) -> bool:
    host = "127.0.0.1" if config.thrift_host in ("0.0.0.0", "", "::") else config.thrift_host
    try:
        if name == "Thrift":
            from pepi_fleet.node.thrift_server import identify_server

            return identify_server(host, port) == config.node_id
        connection = http.client.HTTPConnection(host, port, timeout=2)
        try:
            connection.request("GET", "/")
            return connection.getresponse().read().startswith(b"not found; streams:")
        finally:
            connection.close()
    except Exception:  # anything else listening there is not our node
        return False


def check_disk(config: NodeConfig) -> Check:
    """Room for captures in the data directory, and the right to write there."""
    directory = config.data_dir
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK):
        return Check(
            "disk",
            "fail",
            f"cannot write {existing}",
            "run as the node's user (sudo -u pepi ...) or give it the folder (chown)",
        )
    free = shutil.disk_usage(existing).free
    message = f"{free / 1e9:.1f} GB free at {existing}"
    if free < config.min_free_bytes:
        return Check(
            "disk",
            "fail",
            message + f", less than the {config.min_free_bytes / 1e6:.0f} MB reserve",
            "free disk space or lower --min-free-bytes; the node refuses every capture now",
        )
    if free < config.min_free_bytes + config.max_store_bytes:
        return Check(
            "disk",
            "warn",
            message + f": the disk fills before the {config.max_store_bytes / 1e9:.1f} GB store",
            "captures are refused (store_full) once the disk reserve is reached",
        )
    return Check("disk", "ok", message)


def run_checks(
    config: NodeConfig,
    clock: Callable[[], ClockReport] = read_clock_report,
    broker_timeout: float = BROKER_TIMEOUT_S,
) -> list[Check]:
    """Every check, in the order a person fixes things."""
    return [
        check_camera(config),
        check_clock(clock()),
        check_broker(config, broker_timeout),
        check_port(config, "Thrift", config.thrift_port),
        check_port(config, "MJPEG", config.stream_port),
        check_disk(config),
    ]


def format_report(node_id: str, checks: list[Check]) -> str:
    lines = [f"pepi doctor: node {node_id}"]
    for check in checks:
        lines.append(f"  {check.status.upper():<5} {check.name:<12} {check.message}")
        if check.fix and check.status != "ok":
            lines.append(f"  {'':<5} {'':<12} fix: {check.fix}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append("ready" if not failed else f"{failed} problem(s) to fix before this node is ready")
    return "\n".join(lines)


def _doctor(password_file: Path | None, timeout: float, **options: Any) -> None:
    config = node_config(password_file, options)
    link_log = logging.getLogger("pepi_fleet.core.mqtt_link")
    level = link_log.level
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # The report says what the link would log while it retries; -v shows the log too.
        link_log.setLevel(logging.CRITICAL)
    try:
        checks = run_checks(config, broker_timeout=timeout)
    finally:
        link_log.setLevel(level)
    click.echo(format_report(config.node_id, checks))
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


doctor_command = click.Command(
    "doctor",
    callback=_doctor,
    params=[
        *node_command.params,
        click.Option(
            ["--timeout"],
            type=float,
            default=BROKER_TIMEOUT_S,
            show_default=True,
            help="Seconds to wait for the broker.",
        ),
    ],
    help="Check this node: camera, clock sync, broker login, ports, disk; say what to fix.\n\n"
    "Takes the same options, PEPI_* variables and --config file as 'pepi node'.",
)
