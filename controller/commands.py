"""``pepi controller``, ``pepi nodes`` and ``pepi capture``."""

from __future__ import annotations

import math
import queue
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from pepi_fleet.controller.access_commands import read_password_file, token_group, user_group
from pepi_fleet.controller.clock_check import clock_warnings
from pepi_fleet.controller.clock_probe import ClockBook
from pepi_fleet.controller.config import DEFAULT_CLOCK_TOLERANCE_S, ControllerConfig
from pepi_fleet.controller.forget import forget_node
from pepi_fleet.controller.node_report import NODE_LIST, NodeOut, node_reports
from pepi_fleet.controller.oneshot import BrokerLogin, drain, session
from pepi_fleet.controller.presence_feed import tracker_from_messages
from pepi_fleet.controller.service import Controller, new_capture_id
from pepi_fleet.controller.set_quality import DEFAULT_FIRE_TOLERANCE_S
from pepi_fleet.core.frame_grid import align_to_frame_grid
from pepi_fleet.core.mqtt_link import InboundMessage, MqttLink
from pepi_fleet.schemas.capture import (
    DEFAULT_SCHEDULE_HORIZON_S,
    CaptureCommand,
    describe_validation_error,
    schedule_too_far_ahead,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.ids import validate_capture_id, validate_node_id
from pepi_fleet.schemas.topics import TopicKind, Topics

broker_option = click.option(
    "--broker",
    envvar="PEPI_BROKER",
    show_envvar=True,
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="Broker URL mqtt://[user:pass@]host[:port] (mqtts:// for TLS).",
)
username_option = click.option(
    "--username", envvar="PEPI_MQTT_USERNAME", show_envvar=True, help="MQTT username."
)
password_option = click.option(
    "--password",
    envvar="PEPI_MQTT_PASSWORD",
    show_envvar=True,
    help="MQTT password (better: --password-file, or the variable; 'ps' shows a command line).",
)
password_file_option = click.option(
    "--password-file",
    envvar="PEPI_MQTT_PASSWORD_FILE",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the MQTT password (keeps it out of ps and shell history).",
)
ca_file_option = click.option(
    "--ca-file",
    envvar="PEPI_CA_FILE",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate for an mqtts:// broker with a private CA (default: the system's CAs).",
)
root_option = click.option(
    "--topic-root",
    envvar="PEPI_TOPIC_ROOT",
    default="pepi/v1",
    show_default=True,
    help="MQTT topic root.",
)
MAX_TOLERANCE_MS = 60_000.0


def _ms_to_s(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise click.BadParameter("give a number of milliseconds", ctx, param)
    return value / 1000


@click.group("controller", invoke_without_command=True)
@broker_option
@username_option
@password_option
@password_file_option
@ca_file_option
@root_option
@click.option(
    "--data-dir",
    envvar="PEPI_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where capture sets, manifests and the ledger live.",
)
@click.option(
    "--web-host",
    envvar="PEPI_WEB_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address of the web page and REST API.",
)
@click.option(
    "--web-port",
    envvar="PEPI_WEB_PORT",
    type=int,
    default=8080,
    show_default=True,
    help="Port of the web page and REST API.",
)
@click.option(
    "--auth",
    envvar="PEPI_AUTH",
    show_envvar=True,
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Login for the page and API (users, API tokens): auto = required unless --web-host "
    "is loopback.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    envvar="PEPI_ALLOWED_HOSTS",
    show_envvar=True,
    multiple=True,
    help="A name the page is reached by (the Host header), besides the listen address and, "
    "where they reach it, localhost/127.0.0.1; repeat for more. '*' accepts any (only behind "
    "a proxy that checks it).",
)
@click.option(
    "--tls-cert",
    envvar="PEPI_TLS_CERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate (chain) to serve the page and API over HTTPS (with --tls-key).",
)
@click.option(
    "--tls-key",
    envvar="PEPI_TLS_KEY",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--clock-tolerance-ms",
    "clock_tolerance_s",
    envvar="PEPI_CLOCK_TOLERANCE_MS",
    type=click.FloatRange(min=0, min_open=True, max=MAX_TOLERANCE_MS),
    default=DEFAULT_CLOCK_TOLERANCE_S * 1000,
    show_default=True,
    callback=_ms_to_s,
    help="Warn before a scheduled capture about nodes whose clock may be further off than this.",
)
@click.option(
    "--discovery/--no-discovery",
    envvar="PEPI_DISCOVERY",
    default=True,
    show_default=True,
    help="Announce the controller to Home Assistant (MQTT discovery) and take its commands.",
)
@click.option(
    "--discovery-prefix",
    envvar="PEPI_DISCOVERY_PREFIX",
    default="homeassistant",
    show_default=True,
    help="Home Assistant's discovery prefix.",
)
@click.option(
    "--fire-tolerance-ms",
    "fire_tolerance_s",
    envvar="PEPI_FIRE_TOLERANCE_MS",
    type=click.FloatRange(min=0, min_open=True, max=60_000),
    default=DEFAULT_FIRE_TOLERANCE_S * 1000,
    show_default=True,
    callback=_ms_to_s,
    help="A node that fired further than this from its set's scheduled time (else the set's "
    "median) is named an outlier and the set is incomplete.",
)
@click.option(
    "--trigger-expiry",
    "trigger_expiry_s",
    envvar="PEPI_TRIGGER_EXPIRY",
    type=click.IntRange(1, 3600),
    default=2,
    show_default=True,
    help="Seconds an immediate trigger from the page or API stays valid (MQTT 5 expiry).",
)
@click.option(
    "--set-timeout",
    "set_timeout_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds after the trigger (or 'at') before a set completes without every node.",
)
@click.option(
    "--thrift-hold",
    "thrift_hold_s",
    envvar="PEPI_THRIFT_HOLD",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds a capture started by a PEPI client (Thrift start_capture) stays on its node "
    "after the controller has verified its copy, so that client can still retrieve it.",
)
@click.option(
    "--preview-linger",
    "preview_linger_s",
    envvar="PEPI_PREVIEW_LINGER",
    type=click.FloatRange(0, 3600),
    default=5.0,
    show_default=True,
    help="Seconds the preview relay keeps pulling a camera's stream after its last viewer left.",
)
@click.option(
    "--preview-max-watch",
    envvar="PEPI_PREVIEW_MAX_WATCH",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Previews one browser (one WebSocket) may watch at once.",
)
@click.pass_context
def controller_command(ctx: click.Context, /, **options: Any) -> None:
    """Run the controller: presence, capture sets, loss-free downloads into --data-dir.

    With a sub-command (``forget NODE``, ``user …``, ``token …``), do that with the same
    options instead.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {
            **options,
            "password": mqtt_password(options["password"], options["password_file"]),
        }
        return
    if options.get("data_dir") is None:
        raise click.UsageError("Missing option '--data-dir' (where capture sets are kept).")
    from pepi_fleet.controller.web.security import WebAccess
    from pepi_fleet.controller.web.server import WebError, WebServer

    config = controller_config(options)
    access = WebAccess.of(config)
    controller = Controller(config)
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    controller.start()
    click.echo(f"controller: data in {config.data_dir}, broker {config.broker}", err=True)
    tls = (config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    web = WebServer(controller, config.web_host, config.web_port, access, tls)
    try:
        web.start()
        click.echo(f"controller: web page and REST API at {web.url}", err=True)
        for line in access.describe(config.data_dir, tls=tls is not None):
            click.echo(f"controller: {line}", err=True)
        while not stop["now"]:
            time.sleep(0.2)
    except WebError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        web.stop()
        controller.stop()


@controller_command.command("forget")
@click.argument("node_id")
@click.pass_obj
def forget_command(options: dict[str, Any], node_id: str) -> None:
    """Forget a node for good: clear its retained status, availability and Home Assistant
    device (stop the node first, or it announces itself again when it reconnects)."""
    try:
        validate_node_id(node_id)
        login = BrokerLogin(
            options["broker"], options["username"], options["password"], options["ca_file"]
        )
        topics = Topics(options["topic_root"], discovery_prefix=options["discovery_prefix"])
        cleared = forget_node(login, topics, node_id)
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"forgot {node_id}: cleared {', '.join(cleared)}")


controller_command.add_command(user_group)
controller_command.add_command(token_group)


def mqtt_password(password: str | None, password_file: Path | None) -> str | None:
    """The MQTT password: from ``--password-file`` when given, else ``--password``."""
    return read_password_file(password_file) if password_file is not None else password


def controller_config(options: dict[str, Any]) -> ControllerConfig:
    """The controller's one config from its command line (UsageError naming a bad value)."""
    try:
        return ControllerConfig.model_validate(options)
    except ValidationError as exc:
        raise click.UsageError(describe_validation_error(exc)) from exc


@click.command("nodes")
@broker_option
@username_option
@password_option
@password_file_option
@ca_file_option
@root_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the nodes as GET /api/nodes lists them (JSON)."
)
def nodes_command(
    broker: str,
    username: str | None,
    password: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    topic_root: str,
    as_json: bool,
) -> None:
    """List the nodes the broker knows (reads the retained topics; no controller needed)."""
    topics = Topics(topic_root)
    login = BrokerLogin(broker, username, mqtt_password(password, password_file), ca_file)
    try:
        with session(login, fleet_subscriptions(topics)) as (link, inbox):
            messages = drain(inbox)
            read_at = time.time()  # judged as read: the clock probes that follow age nothing
            presence = tracker_from_messages(topics, messages, lambda: read_at)
            clocks = probe_clocks(link, topics, inbox, sorted(presence.online_ids()))
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    nodes = node_reports(presence.nodes(), read_at, clocks.estimate)
    if as_json:
        click.echo(NODE_LIST.dump_json(nodes, indent=2).decode())
        return
    if not nodes:
        click.echo("no nodes have announced themselves on this broker")
        return
    for line in node_table(nodes):
        click.echo(line)


def node_table(nodes: list[NodeOut]) -> list[str]:
    """The ``pepi nodes`` table: a header line, then one line per node."""
    lines = [
        f"{'NODE':<20} {'STATE':<8} {'ADDRESS':<22} {'CAMERAS':<16} {'AGE':>6} "
        f"{'CAPTURES':>8} {'OFFSET':>10} {'RTT':>8} SYNCED"
    ]
    for n in nodes:
        cams = ",".join(f"{c.resolution[0]}x{c.resolution[1]}" for c in n.cameras) or "-"
        age = "-" if n.heartbeat_age_s is None else f"{n.heartbeat_age_s:.0f}s"
        captures = "-" if n.store is None else str(n.store.captures)
        synced = "?" if n.clock is None else "yes" if n.clock.synced else "no"
        lines.append(
            f"{n.node_id:<20} {n.state:<8} {n.address or '-':<22} {cams:<16} {age:>6} "
            f"{captures:>8} {_ms(n.clock_offset_s):>10} {_ms(n.clock_rtt_s):>8} {synced}"
        )
        if n.health and n.health != "ok":
            lines.append(f"  ! {n.node_id}: {n.health}")
        if n.conflict:
            lines.append(f"  ! {n.node_id}: {n.conflict}")
    return lines


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}ms"


def probe_clocks(
    link: MqttLink,
    topics: Topics,
    inbox: queue.Queue[InboundMessage],
    node_ids: list[str],
    rounds: int = 5,
) -> ClockBook:
    """NTP-style pings to each node (best of ``rounds``); nodes the ACL hides stay unmeasured."""
    book = ClockBook()
    for seq in range(rounds):
        for node_id in node_ids:
            ping = ClockPing(seq=seq, t1=time.time())
            link.publish(topics.clock_ping(node_id), ping.model_dump_json(), qos=0)
        deadline = time.monotonic() + 0.2
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = inbox.get(timeout=remaining)
            except queue.Empty:
                break
            parsed = topics.parse(msg.topic)
            if parsed is None or parsed.kind is not TopicKind.CLOCK_PONG or not parsed.node_id:
                continue
            try:
                book.add(
                    parsed.node_id, ClockPong.model_validate_json(msg.payload), msg.received_at
                )
            except ValidationError:
                continue
    return book


def fleet_subscriptions(topics: Topics) -> list[str]:
    """What a CLI session reads to list the nodes and measure their clocks."""
    return [topics.all_nodes(leaf) for leaf in ("availability", "status", "clock/pong")]


def _require_online(online: set[str], node_id: str | None, root: str, broker: str) -> None:
    """Fail before triggering when nobody would receive the trigger."""
    if node_id is not None and node_id not in online:
        raise click.ClickException(
            f"node {node_id} is not online under {root} on {broker}: nothing was triggered "
            "(`pepi nodes` lists the nodes)"
        )
    if not online:
        raise click.ClickException(
            f"no node is online under {root} on {broker}: nothing was triggered "
            "(are the nodes running, and is --topic-root theirs?)"
        )


def scheduled_clock_warnings(
    link: MqttLink,
    topics: Topics,
    inbox: queue.Queue[InboundMessage],
    node_id: str | None,
    tolerance_s: float,
) -> list[str]:
    """Measure the clocks of the nodes a scheduled capture will reach (``node_id``, else
    every online node) from here, as ``pepi nodes`` does, and warn like the controller."""
    presence = tracker_from_messages(topics, drain(inbox), time.time)
    expected = [node_id] if node_id else sorted(presence.online_ids())
    clocks = probe_clocks(link, topics, inbox, expected)
    warnings = clock_warnings(expected, clocks.estimate, tolerance_s)
    if expected and all(clocks.estimate(n) is None for n in expected):
        warnings.append(
            "no node answered a clock ping: is it busy, or may this login not publish "
            f"{topics.all_nodes('clock/ping')}?"
        )
    return warnings


@click.command("capture")
@click.argument("capture_id", required=False)
@broker_option
@username_option
@password_option
@password_file_option
@ca_file_option
@root_option
@click.option("--at", type=float, help="Fire at this Unix time (on each node's clock).")
@click.option("--delay", type=float, help="Fire this many seconds from now.")
@click.option(
    "--align",
    is_flag=True,
    help="Round the fire time up to the frame grid of frame-locked nodes (--fps).",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Frame rate of the nodes, for --align.",
)
@click.option(
    "--clock-tolerance-ms",
    "clock_tolerance_s",
    type=click.FloatRange(min=0, min_open=True, max=MAX_TOLERANCE_MS),
    callback=_ms_to_s,
    help="With --at/--delay: warn about nodes whose clock may be further off than this "
    f"[default: {DEFAULT_CLOCK_TOLERANCE_S * 1000:g}].",
)
@click.option("--node", "node_id", help="Trigger only this node.")
@click.option(
    "--expiry",
    "trigger_expiry_s",
    type=click.IntRange(1, 3600),
    default=2,
    show_default=True,
    help="Seconds an immediate trigger stays valid (MQTT 5 message expiry).",
)
@click.option("--wait", is_flag=True, help="Wait for the set and its images on the controller.")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds --wait waits for the controller.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --wait: copy the set's files here (controller on this machine).",
)
def capture_command(
    capture_id: str | None,
    broker: str,
    username: str | None,
    password: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    topic_root: str,
    at: float | None,
    delay: float | None,
    align: bool,
    fps: float,
    clock_tolerance_s: float | None,
    node_id: str | None,
    trigger_expiry_s: int,
    wait: bool,
    timeout: float,
    out_dir: Path | None,
) -> None:
    """Trigger a capture on every node (or one); optionally wait for the images.

    Fails without triggering when no node (or not the ``--node``) is online.
    """
    if at is not None and delay is not None:
        raise click.UsageError("give --at or --delay, not both")
    if out_dir is not None and not wait:
        raise click.UsageError("--out needs --wait (the files exist only once the set is done)")
    try:
        capture_id = validate_capture_id(capture_id) if capture_id else new_capture_id(time.time())
        if node_id:
            validate_node_id(node_id)
    except PepiError as exc:
        raise click.UsageError(str(exc)) from exc
    topics = Topics(topic_root)
    login = BrokerLogin(broker, username, mqtt_password(password, password_file), ca_file)
    scheduled = at is not None or delay is not None
    if clock_tolerance_s is not None and not scheduled:
        raise click.UsageError("--clock-tolerance-ms needs --at or --delay")
    tolerance = DEFAULT_CLOCK_TOLERANCE_S if clock_tolerance_s is None else clock_tolerance_s
    try:
        with session(login, fleet_subscriptions(topics)) as (link, inbox):
            messages = drain(inbox)
            online = tracker_from_messages(topics, messages, time.time).online_ids()
            _require_online(online, node_id, topic_root, broker)
            if scheduled:
                for message in messages:
                    inbox.put(message)  # the clock check reads the fleet again
                warnings = scheduled_clock_warnings(link, topics, inbox, node_id, tolerance)
                for warning in warnings:
                    click.echo(f"clock warning: {warning}", err=True)
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    if delay is not None:
        at = time.time() + delay  # after the clock check, so the delay counts from the trigger
    if align:
        if at is None:
            raise click.UsageError("--align needs --at or --delay")
        at = align_to_frame_grid(at, fps)
    too_far = schedule_too_far_ahead(at, time.time(), DEFAULT_SCHEDULE_HORIZON_S)
    if too_far is not None:
        raise click.UsageError(too_far)
    command = CaptureCommand(capture_id=capture_id, at=at)
    topic = topics.node_capture(node_id) if node_id else topics.capture()
    try:
        with session(login, [topics.controller_captures()] if wait else []) as (link, inbox):
            # an immediate trigger expires, as the controller's do (a late node answers late)
            expiry = None if at is not None else trigger_expiry_s
            payload = command.model_dump_json(exclude_none=True)
            link.publish(topic, payload, expiry_s=expiry).wait_for_publish(5)
            click.echo(f"triggered {capture_id}" + (f" at {at:.3f}" if at else ""), err=True)
            if not wait:
                return
            summary = wait_summary(
                inbox, capture_id, timeout + (max(at - time.time(), 0) if at else 0)
            )
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    report(summary, out_dir)


def wait_summary(inbox: queue.Queue[Any], capture_id: str, timeout: float) -> CaptureSetSummary:
    """The controller's summary of the set; one with downloads pending (a node went away)
    is returned only if no downloaded one follows within ``timeout``."""
    deadline = time.monotonic() + timeout
    stderr = sys.stderr
    pending: CaptureSetSummary | None = None
    with click.progressbar(
        length=int(timeout), label="waiting for the controller", file=stderr
    ) as bar:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = inbox.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                bar.update(1)
                continue
            try:
                summary = CaptureSetSummary.model_validate_json(msg.payload)
            except ValidationError:
                continue
            if summary.capture_id != capture_id:
                continue
            if summary.downloaded:
                return summary
            if pending is None:
                click.echo(
                    f"\nset {capture_id} complete, downloads pending: waiting for them", err=True
                )
            pending = summary
    if pending is not None:
        return pending
    raise click.ClickException(
        f"no summary for {capture_id} within {timeout:.0f} s: is 'pepi controller' running "
        "on this broker?"
    )


def report(summary: CaptureSetSummary, out_dir: Path | None) -> None:
    spread = "n/a" if summary.spread_s is None else f"{summary.spread_s * 1000:.3f} ms"
    ok = sum(1 for o in summary.outcomes if o.status == "ok")
    click.echo(
        f"capture {summary.capture_id}: {ok}/{len(summary.expected)} nodes ok, "
        f"spread {spread}, {len(summary.files)} files"
        + ("" if summary.downloaded else " (downloads still pending)")
    )
    for outcome in summary.outcomes:
        if outcome.status != "ok":
            click.echo(
                f"  {outcome.node_id}: {outcome.status or 'no answer'} "
                f"{outcome.error or ''}".rstrip()
            )
    base = Path(summary.data_dir or ".")
    for rel in summary.files:
        src = base / rel
        if out_dir is not None:
            click.echo(str(copy_out(src, out_dir)))
        else:
            click.echo(str(src))
    if not summary.complete or not summary.downloaded:
        raise SystemExit(1)


def copy_out(src: Path, out_dir: Path) -> Path:
    """Copy one file of the set into ``--out``; it must be on this machine."""
    if not src.is_file():
        raise click.ClickException(
            f"{src} is not on this machine: --out needs the controller's --data-dir here; "
            "run 'pepi capture' on the controller's host or copy the set from there"
        )
    dest = out_dir / src.name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    except OSError as exc:
        raise click.ClickException(
            f"cannot copy {src} to {out_dir}: {exc.strerror or exc}"
        ) from exc
    return dest
