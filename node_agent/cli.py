"""``pepi node``: run the node agent (flags, PEPI_* environment variables, or a TOML file)."""

from __future__ import annotations

import difflib
import logging
import os
import signal
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from pepi_fleet.node.agent import NodeAgent
from pepi_fleet.node.camera.base import Camera
from pepi_fleet.node.camera.factory import make_camera
from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.health import EXIT_UNHEALTHY
from pepi_fleet.node.identity import detect_node_id
from pepi_fleet.node.memory import pin_mmap_threshold
from pepi_fleet.node.store import CaptureStore, StoreLimits
from pepi_fleet.schemas.capture import describe_validation_error
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

FATAL_STOP_S = 15.0
"""An unhealthy node that cannot stop cleanly within this is ended outright."""


def load_config_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """Eager --config: the file's keys become defaults (flags and env still win).

    Keys are the long flag names (``heartbeat``, ``node-id`` or ``node_id``), optionally
    under a ``[node]`` table; an unknown key is an error, not silently ignored.
    """
    if value is None:
        return
    try:
        data = tomllib.loads(value.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}") from exc
    section = data.get("node", data)
    if not isinstance(section, dict):
        raise click.BadParameter(f"{value}: 'node' must be a [node] table of options")
    ctx.default_map = {**(ctx.default_map or {}), **config_defaults(ctx.command, section, value)}


def config_keys(command: click.Command) -> dict[str, str]:
    """Config-file key (long flag name, ``-`` as ``_``) -> click parameter name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None or not param.expose_value:
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:].replace("-", "_")] = param.name
    return keys


def config_defaults(
    command: click.Command, section: dict[str, Any], source: Path
) -> dict[str, Any]:
    """The file's options as a click ``default_map``; raises BadParameter on an unknown key."""
    keys = config_keys(command)
    defaults: dict[str, Any] = {}
    for key, value in section.items():
        name = keys.get(key.replace("-", "_"))
        if name is None:
            close = difflib.get_close_matches(key.replace("-", "_"), keys, n=1)
            hint = f"did you mean '{close[0].replace('_', '-')}'? " if close else ""
            valid = ", ".join(k.replace("_", "-") for k in keys)
            raise click.BadParameter(f"{source}: unknown key '{key}'; {hint}valid keys: {valid}")
        defaults[name] = value
    return defaults


def parse_resolution(_ctx: click.Context, _p: click.Parameter, value: Any) -> Any:
    if value is None or isinstance(value, (tuple, list)):
        return value
    try:
        width, height = (int(v) for v in str(value).lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use WIDTHxHEIGHT, e.g. 1920x1080") from exc
    return (width, height)


def _opt(*names: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads ``PEPI_<env>``."""
    return click.option(*names, envvar=f"PEPI_{env}", show_envvar=True, **kwargs)


@click.command("node")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=load_config_file,
    is_eager=True,
    expose_value=False,
    help='TOML file with any of these options, keyed by flag name (node-id = "cam01").',
)
@_opt(
    "--broker",
    env="BROKER",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="Broker URL: mqtt://[user:pass@]host[:port] or mqtts:// for TLS.",
)
@_opt("--username", env="MQTT_USERNAME", help="MQTT username (default: the node id).")
@_opt("--password", env="MQTT_PASSWORD", help="MQTT password.")
@_opt(
    "--password-file",
    env="MQTT_PASSWORD_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the MQTT password (keeps it out of ps and shell history).",
)
@_opt(
    "--ca-file",
    env="CA_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate for mqtts:// brokers.",
)
@_opt(
    "--node-id",
    env="NODE_ID",
    help="Node id [a-z0-9][a-z0-9_-]{0,31}; default: Pi CPU serial, else /etc/machine-id.",
)
@_opt(
    "--topic-root", env="TOPIC_ROOT", default="pepi/v1", show_default=True, help="MQTT topic root."
)
@_opt(
    "--data-dir",
    env="DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where captures are stored (survives restarts).",
)
@_opt(
    "--thrift-host",
    env="THRIFT_HOST",
    default="0.0.0.0",
    show_default=True,
    help="Address the Thrift CameraServer and MJPEG streams bind to.",
)
@_opt(
    "--thrift-port",
    env="THRIFT_PORT",
    type=int,
    default=6000,
    show_default=True,
    help="Thrift CameraServer port (0 = any free port, reported in the status).",
)
@_opt(
    "--thrift-max-clients",
    env="THRIFT_MAX_CLIENTS",
    type=int,
    default=32,
    show_default=True,
    help="Thrift connections at once (one thread each); idle or slow ones give way to new ones.",
)
@_opt(
    "--thrift-timeout",
    "thrift_timeout_s",
    env="THRIFT_TIMEOUT",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a Thrift client may stay silent (or not read) before it is dropped.",
)
@_opt(
    "--advertise-host",
    env="ADVERTISE_HOST",
    help="Address the controller should use to reach this node (default: bind address).",
)
@_opt(
    "--stream-port",
    env="STREAM_PORT",
    type=int,
    default=6001,
    show_default=True,
    help="MJPEG preview port (0 = any free port, -1 = no streams).",
)
@_opt(
    "--stream-max-clients",
    env="STREAM_MAX_CLIENTS",
    type=int,
    default=16,
    show_default=True,
    help="MJPEG connections at once (one thread each); idle or stuck ones give way to new ones.",
)
@_opt(
    "--stream-timeout",
    "stream_timeout_s",
    env="STREAM_TIMEOUT",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds an MJPEG client may stay silent (or not read) before it is dropped.",
)
@_opt(
    "--camera",
    env="CAMERA",
    type=click.Choice(["synthetic", "folder", "picamera2"]),
    default="synthetic",
    show_default=True,
    help="Camera backend: synthetic test chart, images from --folder, or the Pi camera.",
)
@_opt(
    "--camera-count",
    env="CAMERA_COUNT",
    type=int,
    default=1,
    show_default=True,
    help="Number of cameras on this node (picamera2: Picamera2(0) .. Picamera2(N-1)).",
)
@_opt(
    "--folder",
    env="FOLDER",
    type=click.Path(file_okay=False, path_type=Path),
    help="Image folder for --camera folder.",
)
@_opt(
    "--resolution",
    env="RESOLUTION",
    callback=parse_resolution,
    default="1920x1080",
    show_default=True,
    help="Capture resolution WIDTHxHEIGHT.",
)
@_opt(
    "--fps",
    env="FPS",
    type=float,
    default=30.0,
    show_default=True,
    help="Sensor frame rate; immediate captures snap to the next frame.",
)
@_opt(
    "--frame-lock/--no-frame-lock",
    env="FRAME_LOCK",
    default=False,
    show_default=True,
    help="Lock frame starts across the rig: libcamera camera sync on picamera2 (see "
    "--sync-role), a wall-clock frame grid on the simulated cameras.",
)
@_opt(
    "--sync-role",
    env="SYNC_ROLE",
    type=click.Choice(["server", "client", "auto", "elected"]),
    default="auto",
    show_default=True,
    help="With --frame-lock on picamera2: this node's cameras lead the rig's sync (server; "
    "exactly one node) or follow it (client); auto = client if a server is heard, else server; "
    "elected = the controller elects the server among such nodes (first online by id).",
)
@_opt(
    "--site",
    env="SITE",
    default=None,
    help="The site whose broker this node uses, when that broker is bridged to the "
    "controller's (pepi broker init --site): the controller then shows the node unreachable "
    "while the site's bridge is down. Without it the node learns the site from its broker "
    "(the site broker's bridge state); a site broker naming another site wins, with a warning.",
)
@_opt(
    "--heartbeat",
    "heartbeat_s",
    env="HEARTBEAT",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between retained status heartbeats.",
)
@_opt(
    "--late-tolerance",
    "late_tolerance_s",
    env="LATE_TOLERANCE",
    type=float,
    default=0.5,
    show_default=True,
    help="A trigger whose 'at' is further in the past is not fired (late).",
)
@_opt(
    "--schedule-horizon",
    "schedule_horizon_s",
    env="SCHEDULE_HORIZON",
    type=float,
    default=86400.0,
    show_default=True,
    help="A trigger whose 'at' is further ahead (s) is refused: error 'at too far ahead'.",
)
@_opt(
    "--remember-ids",
    env="REMEMBER_IDS",
    type=int,
    default=10_000,
    show_default=True,
    help="Capture ids remembered after release: a repeat is a 'duplicate', not a new capture.",
)
@_opt(
    "--remember-days",
    env="REMEMBER_DAYS",
    type=float,
    default=30.0,
    show_default=True,
    help="Days a capture id is remembered (whichever of the two bounds comes first).",
)
@_opt(
    "--watchdog-stall",
    "watchdog_stall_s",
    env="WATCHDOG_STALL",
    type=float,
    default=30.0,
    show_default=True,
    help="A worker stuck this long (s) makes the node 'degraded'; 4x as long, or a dead "
    f"worker, makes it exit with status {EXIT_UNHEALTHY} for its supervisor to restart it.",
)
@_opt(
    "--jpeg-quality",
    env="JPEG_QUALITY",
    type=int,
    default=90,
    show_default=True,
    help="JPEG quality 1-100.",
)
@_opt(
    "--max-store-bytes",
    env="MAX_STORE_BYTES",
    type=int,
    default=2 * 1024**3,
    show_default=True,
    help="Refuse captures (store_full) beyond this many stored bytes.",
)
@_opt(
    "--min-free-bytes",
    env="MIN_FREE_BYTES",
    type=int,
    default=256 * 1024**2,
    show_default=True,
    help="Refuse captures when the disk would have less free than this.",
)
@_opt(
    "--evict-retrieved/--no-evict-retrieved",
    env="EVICT_RETRIEVED",
    default=False,
    show_default=True,
    help="When full, delete the oldest already-retrieved capture first.",
)
@_opt(
    "--allow-shutdown/--no-allow-shutdown",
    env="ALLOW_SHUTDOWN",
    default=False,
    show_default=True,
    help="Let Thrift shutdown() stop this agent (otherwise only logged).",
)
@_opt(
    "--thrift-pepi",
    env="THRIFT_PEPI",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    callback=lambda _ctx, _param, value: value == "on",
    help="Serve PEPI's own Thrift methods (ping, start_capture, retrieve_stills_*...) for "
    "PEPI's clients; off leaves only the controller's extension, which needs the node's secret.",
)
@_opt(
    "--discovery/--no-discovery",
    env="DISCOVERY",
    default=True,
    show_default=True,
    help="Announce this node to Home Assistant (MQTT discovery).",
)
@_opt(
    "--discovery-prefix",
    env="DISCOVERY_PREFIX",
    default="homeassistant",
    show_default=True,
    help="Home Assistant's discovery prefix.",
)
@_opt(
    "--live-preview",
    "live_preview_s",
    env="LIVE_PREVIEW",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between the small live previews for Home Assistant's camera (0: none).",
)
def node_command(password_file: Path | None, **options: Any) -> None:
    """Run a node agent: MQTT-triggered capture, PEPI Thrift CameraServer, MJPEG previews."""
    config = node_config(password_file, options)
    try:
        run_node(config)
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc


def node_config(password_file: Path | None, options: dict[str, Any]) -> NodeConfig:
    """The node's one config from its command line (UsageError naming a bad value)."""
    if password_file is not None:
        options["password"] = password_file.read_text().strip()
    options["node_id"] = options["node_id"] or detect_node_id()
    try:
        return NodeConfig.model_validate(options)
    except ValidationError as exc:
        raise click.UsageError(describe_validation_error(exc)) from exc
    except PepiError as exc:  # an id validator's own error (node id, site)
        raise click.UsageError(str(exc)) from exc


def run_node(config: NodeConfig, camera: Camera | None = None) -> None:
    """Start the agent and block until SIGINT/SIGTERM (or an allowed Thrift shutdown).

    A node whose watchdog finds an essential worker dead stops, publishing ``offline``,
    and exits with EXIT_UNHEALTHY so that systemd (``Restart=on-failure``) restarts it.
    ``camera`` replaces the configured backend (tests).
    """
    pin_mmap_threshold()
    if camera is None:
        camera = make_camera(
            config.camera,
            node_id=config.node_id,
            resolution=config.resolution,
            fps=config.fps,
            count=config.camera_count,
            frame_lock=config.frame_lock,
            sync_role=config.sync_role,
            folder=config.folder,
        )
    store = CaptureStore(
        config.data_dir,
        StoreLimits(config.max_store_bytes, config.min_free_bytes, config.evict_retrieved),
    )
    try:
        agent = NodeAgent(config, camera, store)
    except OSError as exc:
        camera.close()
        raise click.ClickException(f"cannot listen: {exc} (is another node on that port?)") from exc
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stopped.set())
    agent.start()
    click.echo(
        f"node {config.node_id}: thrift {agent.advertise_host}:{agent.thrift.port}, "
        f"streams {' '.join(agent.stream_urls()) or 'off'}, broker {config.broker}",
        err=True,
    )
    try:
        while not agent.stopped.wait(1.0):
            pass
    finally:
        if agent.fatal is not None:
            _end_after(FATAL_STOP_S, EXIT_UNHEALTHY)
        agent.stop()
    if agent.fatal is not None:
        logger.critical("node %s exits: %s", config.node_id, agent.fatal)
        raise SystemExit(EXIT_UNHEALTHY)


def _end_after(seconds: float, status: int) -> None:
    """End the process with ``status`` if it is still here after ``seconds`` (a stop that
    hangs on the very worker that failed must not keep a broken node from restarting)."""

    def end() -> None:
        logger.critical("clean stop took over %.0f s; exiting now", seconds)
        logging.shutdown()
        os._exit(status)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
