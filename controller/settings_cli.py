"""``pepi settings``: camera settings for the fleet or one node, and ``pepi settings lock``.

Talks to the broker directly (no controller needed), as ``pepi capture`` does: fleet
settings are merged into what the broker retains on ``<root>/settings``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, get_args

import click
from pydantic import ValidationError

from pepi_fleet.controller.camera_settings import (
    CameraSettingsDesk,
    LockError,
    choose_reference,
    settings_subscriptions,
)
from pepi_fleet.controller.commands import (
    broker_option,
    ca_file_option,
    mqtt_password,
    password_file_option,
    password_option,
    root_option,
    username_option,
)
from pepi_fleet.controller.oneshot import BrokerLogin, drain, session
from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.controller.presence_feed import tracker_from_messages
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas.camera import AfMode, AwbMode
from pepi_fleet.schemas.capture import describe_validation_error
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.exposure import DEFAULT_SETTLE_S, MAX_SETTLE_S
from pepi_fleet.schemas.ids import validate_node_id
from pepi_fleet.schemas.status import NodeSettings
from pepi_fleet.schemas.topics import Topics

ECHO_S = 5.0
"""How long a settings publish may take to come back from the broker."""
AWB_CHOICES: list[str] = list(get_args(AwbMode))
AF_CHOICES: list[str] = list(get_args(AfMode))


def _pair(kind: Callable[[str], Any], sep: str, what: str) -> Callable[..., Any]:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        parts = value.lower().split(sep)
        try:
            if len(parts) != 2:
                raise ValueError
            return (kind(parts[0]), kind(parts[1]))
        except ValueError:
            raise click.BadParameter(f"give {what}, e.g. {param.metavar}") from None

    return convert


def broker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The broker login options every ``pepi settings`` command takes."""
    for option in reversed(
        (
            broker_option,
            username_option,
            password_option,
            password_file_option,
            ca_file_option,
            root_option,
        )
    ):
        func = option(func)
    return func


@click.group("settings", invoke_without_command=True)
@broker_options
@click.option("--node", "node_id", help="Only this node (not retained); default: the fleet.")
@click.option("--exposure-us", type=click.IntRange(0), help="Exposure time in µs; 0 = auto.")
@click.option("--gain", type=click.FloatRange(0), help="Analogue gain; 0 = auto.")
@click.option("--awb", type=click.Choice(AWB_CHOICES), help="Automatic white balance mode.")
@click.option(
    "--colour-gains",
    metavar="RED,BLUE",
    callback=_pair(float, ",", "two gains RED,BLUE"),
    help="Fixed white balance gains (turns automatic white balance off).",
)
@click.option("--af-mode", type=click.Choice(AF_CHOICES), help="Focus mode (focus motor only).")
@click.option("--lens-position", type=float, help="Focus in dioptres (1/m; 0 = infinity).")
@click.option(
    "--resolution",
    metavar="WxH",
    callback=_pair(int, "x", "WIDTHxHEIGHT"),
    help="Capture resolution, e.g. 1920x1080.",
)
@click.option("--jpeg-quality", type=int, help="JPEG quality 1..100.")
@click.option("--fps", type=float, help="Frame rate.")
@click.option("--clear", is_flag=True, help="Forget the fleet settings the broker retains.")
@click.pass_context
def settings_command(ctx: click.Context, /, **options: Any) -> None:
    """Show or change camera settings of the whole fleet (retained) or one node (--node).

    Without a change it prints the fleet settings and what every camera applies.
    Values out of range, or awb with colour gains, are refused before anything is sent.
    """
    login = _login(options)
    topic_root, node_id, clear = options["topic_root"], options["node_id"], options["clear"]
    ctx.obj = {"login": login, "topic_root": topic_root}
    change = _change(options)
    if ctx.invoked_subcommand is not None:
        if node_id or clear or change.model_dump(exclude_none=True):
            raise click.UsageError(
                f"'{ctx.invoked_subcommand}' takes no settings, --node or --clear"
            )
        return
    if clear and (node_id or change.model_dump(exclude_none=True)):
        raise click.UsageError("--clear takes no other setting and no --node")
    if node_id:
        try:
            validate_node_id(node_id)
        except PepiError as exc:
            raise click.UsageError(str(exc)) from exc
    topics = Topics(topic_root)
    extra = [topics.settings(node_id)] if node_id else []
    with _desk(login, topics, extra) as (desk, nodes):
        if clear:
            desk.clear_fleet()
            _confirm(desk, topics.fleet_settings(), b"")
            click.echo("fleet settings cleared; nodes keep what they have", err=True)
        elif not change.model_dump(exclude_none=True):
            _show(desk.fleet(), nodes)
        elif node_id:
            if node_id not in {v.node_id for v in nodes if v.state is NodeState.ONLINE}:
                raise click.ClickException(f"node {node_id} is not online; nothing sent")
            desk.set_node(node_id, change)
            _confirm(desk, topics.settings(node_id), _payload(change))
            click.echo(f"sent to {node_id}: {change.model_dump_json(exclude_none=True)}")
        else:
            fleet = desk.set_fleet(change)
            _confirm(desk, topics.fleet_settings(), _payload(fleet))
            click.echo(f"fleet settings: {fleet.model_dump_json(exclude_none=True)}")


@settings_command.command("lock")
@click.option(
    "--reference",
    metavar="NODE[:CAM]",
    help="Camera to meter [default: the first online node by id, camera 0].",
)
@click.option(
    "--settle",
    "settle_s",
    type=click.FloatRange(0, MAX_SETTLE_S),
    default=DEFAULT_SETTLE_S,
    show_default=True,
    help="Seconds the reference's auto exposure gets to settle.",
)
@click.pass_obj
def lock_command(obj: dict[str, Any], reference: str | None, settle_s: float) -> None:
    """Lock every camera to one reference camera's settled exposure and white balance."""
    topics = Topics(obj["topic_root"])
    with _desk(obj["login"], topics) as (desk, nodes):
        online = [v.node_id for v in nodes if v.state is NodeState.ONLINE]
        try:
            chosen = choose_reference(reference, online)
            click.echo(f"metering {chosen} for {settle_s:g} s ...", err=True)
            fleet = desk.lock(chosen, settle_s)
        except (LockError, PepiError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"locked to {chosen}: {fleet.model_dump_json(exclude_none=True)}")


def _payload(settings: NodeSettings) -> bytes:
    return settings.model_dump_json(exclude_none=True).encode()


def _confirm(desk: CameraSettingsDesk, topic: str, payload: bytes) -> None:
    if not desk.echoed(topic, payload, ECHO_S):
        raise click.ClickException(
            f"the broker did not pass on {topic}: may this login set cameras? (the ACL lets "
            "the controller and automation users do it; anonymous clients only watch)"
        )


def _login(options: dict[str, Any]) -> BrokerLogin:
    password = mqtt_password(options["password"], options["password_file"])
    return BrokerLogin(options["broker"], options["username"], password, options["ca_file"])


def _change(options: dict[str, Any]) -> NodeSettings:
    fields = {
        "exposure_time_us": options["exposure_us"],
        "analogue_gain": options["gain"],
        "awb_mode": options["awb"],
        "colour_gains": options["colour_gains"],
        "af_mode": options["af_mode"],
        "lens_position": options["lens_position"],
        "resolution": options["resolution"],
        "jpeg_quality": options["jpeg_quality"],
        "fps": options["fps"],
    }
    try:
        return NodeSettings.model_validate(
            {k: v for k, v in fields.items() if v is not None}, strict=False
        )
    except ValidationError as exc:
        raise click.UsageError(describe_validation_error(exc)) from exc


@contextmanager
def _desk(
    login: BrokerLogin, topics: Topics, extra: list[str] | None = None
) -> Iterator[tuple[CameraSettingsDesk, list[NodeView]]]:
    """A connected settings desk fed by a session, and the fleet as the broker retains it."""
    subscriptions = [
        *settings_subscriptions(topics),
        *(extra or []),
        topics.all_nodes("availability"),
        topics.all_nodes("status"),
    ]
    try:
        with session(login, subscriptions) as (link, inbox):
            desk = CameraSettingsDesk(
                topics,
                lambda topic, payload, retain: link.publish(
                    topic, payload, retain=retain
                ).wait_for_publish(5),
            )
            messages = drain(inbox)
            for message in messages:
                desk.on_message(message)
            tracker = tracker_from_messages(topics, messages, time.time)
            stop = threading.Event()
            pump = threading.Thread(target=_pump, args=(inbox, desk, stop), daemon=True)
            pump.start()
            try:
                yield desk, tracker.nodes()
            finally:
                stop.set()
                pump.join(timeout=2)
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc


def _pump(
    inbox: queue.Queue[InboundMessage], desk: CameraSettingsDesk, stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            message = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        try:
            desk.on_message(message)
        except PepiError as exc:
            click.echo(f"ignored a bad message on {message.topic}: {exc}", err=True)


def _show(fleet: NodeSettings, nodes: list[NodeView]) -> None:
    given = fleet.model_dump_json(exclude_none=True)
    click.echo(f"fleet settings (retained): {given if given != '{}' else 'none'}")
    for view in sorted(nodes, key=lambda v: v.node_id):
        if view.status is None:
            continue
        for camera in view.status.cameras:
            c = camera.controls
            if c is None:
                click.echo(f"{view.node_id}:{camera.index} {view.state}  (no readings)")
                continue
            gains = f"{c.colour_gains[0]:.2f},{c.colour_gains[1]:.2f}" if c.colour_gains else "-"
            click.echo(
                f"{view.node_id}:{camera.index} {view.state}  "
                f"exposure {c.exposure_time_us} µs{' (auto)' if c.auto_exposure else ''}  "
                f"gain {c.analogue_gain}  colour gains {gains}"
                f"{' (auto)' if c.auto_white_balance else ''}  "
                f"{camera.resolution[0]}x{camera.resolution[1]}"
            )
