"""``pepi demo``: mosquitto, synthetic nodes and the controller on loopback, supervised."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from pydantic import ValidationError

from pepi_fleet.broker.runner import EmbeddedBroker, die_with_parent, free_port, port_is_free
from pepi_fleet.controller.oneshot import BrokerLogin, session
from pepi_fleet.core.availability import ONLINE
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.status import NodeStatus
from pepi_fleet.schemas.topics import DEFAULT_ROOT, TopicKind, Topics

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TAIL_LINES = 15
# Like the systemd units in deploy/ (Restart=on-failure): a node or the controller that
# dies is started again, unless it died this often within the window (a crash loop).
RESTART_DELAY_S = 1.0
RESTART_BURST = 3
RESTART_WINDOW_S = 60.0
# The README's scheduled trigger: every node fires half a second from now on its clock.
SCHEDULED_JSON = (
    r""""{\"capture_id\": \"scan-043\", \"at\": """
    r'''$(date +%s.%N | awk '{printf "%.3f", $1 + 0.5}')}"'''
)


class DemoError(PepiError):
    """The demo could not start, or one of its processes failed."""


@dataclass
class Child:
    """One supervised ``pepi`` child process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str]
    password: str
    restarts: list[float] = field(default_factory=list)

    def ended(self) -> str | None:
        """How the process ended ("cam02 exited (70)"); None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        return f"{self.name} {how}"

    def exit_report(self) -> str | None:
        """How the process ended, with its log's tail; None while it runs."""
        ended = self.ended()
        return None if ended is None else f"{ended}; {self.log_path} ends:\n{self.log_tail()}"

    def may_restart(self, now: float) -> bool:
        """On failure only (not a clean exit), and not more than the burst per window."""
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        return self.proc.returncode != 0 and len(self.restarts) < RESTART_BURST

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines the child wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Demo:
    """The broker, the nodes and the controller of one ``pepi demo`` run."""

    data_dir: Path
    node_ids: list[str]
    mqtt_port: int
    web_port: int
    frame_lock: bool
    broker: EmbeddedBroker = field(init=False)
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = EmbeddedBroker(
            root=DEFAULT_ROOT,
            port=self.mqtt_port,
            anonymous_access=True,
            workdir=self.data_dir / "broker",
        )

    def start(self) -> None:
        """Start mosquitto, then every node and the controller at once (no waiting)."""
        (self.data_dir / "broker").mkdir(parents=True, exist_ok=True)
        logins = {name: self.broker.add_user(name) for name in [*self.node_ids, "controller"]}
        # A terminal's Ctrl-C goes to our whole process group, mosquitto included; with
        # SIGINT blocked (the mask is inherited) it keeps running until the nodes have
        # said 'offline' and shutdown() sends it SIGTERM.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.broker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        for node_id in self.node_ids:
            self._spawn(node_id, self._node_args(node_id), logins[node_id].password)
        self._spawn("controller", self._controller_args(), logins["controller"].password)

    def _node_args(self, node_id: str) -> list[str]:
        return [
            *("node", "--broker", self.broker.url, "--topic-root", DEFAULT_ROOT),
            *("--node-id", node_id, "--username", node_id),
            *("--data-dir", str(self.data_dir / "nodes" / node_id)),
            *("--thrift-host", "127.0.0.1", "--thrift-port", "0", "--stream-port", "0"),
            "--frame-lock" if self.frame_lock else "--no-frame-lock",
        ]

    def _controller_args(self) -> list[str]:
        return [
            *("controller", "--broker", self.broker.url, "--topic-root", DEFAULT_ROOT),
            *("--username", "controller", "--data-dir", str(self.data_dir / "captures")),
            *("--web-host", "127.0.0.1", "--web-port", str(self.web_port)),
        ]

    def _spawn(self, name: str, args: list[str], password: str) -> None:
        self.children.append(
            Child(name, self._popen(name, args, password), self._log(name), args, password)
        )

    def _log(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def _popen(self, name: str, args: list[str], password: str) -> subprocess.Popen[bytes]:
        # Our own PEPI_* settings would override the demo's; the password goes by env,
        # never on the command line where 'ps' shows it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEPI_")}
        env.update(PEPI_MQTT_PASSWORD=password, PYTHONUNBUFFERED="1")
        with self._log(name).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "pepi_fleet", "-v", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Ctrl-C reaches only the demo, which stops the children in order.
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
            )

    def casualty(self) -> str | None:
        """A one-paragraph report on a process that exited on its own, else None."""
        if not self.broker.running:
            return f"mosquitto exited unexpectedly; its log ends:\n{self.broker.log_tail()}"
        for child in self.children:
            if (report := child.exit_report()) is not None:
                return report
        return None

    def restart_failed(self, stop: threading.Event) -> str | None:
        """Start again every child that died (after RESTART_DELAY_S); a report on the
        first one that may not be restarted (clean exit, crash loop), else None."""
        for child in self.children:
            report = child.exit_report()
            if report is None:
                continue
            now = time.monotonic()
            if not child.may_restart(now):
                if child.proc.returncode == 0:
                    return report
                times = f"{RESTART_BURST + 1} times within {RESTART_WINDOW_S:.0f} s"
                return f"{report}\n{child.name} died {times}: not restarted"
            click.echo(f"pepi demo: {child.ended()}: restarting it", err=True)
            if stop.wait(RESTART_DELAY_S):
                return None
            child.restarts.append(now)
            child.proc = self._popen(child.name, child.args, child.password)
        return None

    def wait_ready(self, stop: threading.Event, since: float) -> dict[str, NodeStatus]:
        """Each node's fresh status once the broker holds every node's ``online``."""
        topics = Topics(DEFAULT_ROOT)
        online: set[str] = set()
        statuses: dict[str, NodeStatus] = {}
        wanted = set(self.node_ids)
        subscriptions = [topics.all_nodes("availability"), topics.all_nodes("status")]
        deadline = time.monotonic() + READY_TIMEOUT_S
        with session(BrokerLogin(self.broker.url), subscriptions) as (_link, inbox):
            while not (wanted <= online and wanted <= statuses.keys()):
                if stop.is_set():
                    return statuses
                if (report := self.casualty()) is not None:
                    raise DemoError(report)
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(wanted - online))
                    raise DemoError(
                        f"{missing} not online within {READY_TIMEOUT_S:.0f} s: "
                        f"see {self.data_dir / 'logs'}"
                    )
                try:
                    msg = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                parsed = topics.parse(msg.topic)
                if parsed is None or parsed.node_id not in wanted:
                    continue
                if parsed.kind is TopicKind.AVAILABILITY:
                    if msg.payload == ONLINE:
                        online.add(parsed.node_id)
                    else:
                        online.discard(parsed.node_id)
                elif parsed.kind is TopicKind.STATUS and msg.payload:
                    try:
                        status = NodeStatus.model_validate_json(msg.payload)
                    except ValidationError:
                        continue
                    # A reused data dir keeps the last run's retained status: skip it.
                    if status.sent_at >= since - 1.0:
                        statuses[parsed.node_id] = status
        return statuses

    def supervise(self, stop: threading.Event) -> int:
        """Block until a signal (exit code 0), mosquitto dying or a process that may not
        be restarted (1). Nodes and the controller that die are restarted."""
        while not stop.wait(0.2):
            if not self.broker.running:
                click.echo(f"pepi demo: {self.casualty()}", err=True)
                return 1
            if (report := self.restart_failed(stop)) is not None:
                click.echo(f"pepi demo: {report}", err=True)
                return 1
        return 0

    def shutdown(self) -> None:
        """SIGTERM the nodes and the controller, SIGKILL stragglers, then stop mosquitto."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                click.echo(f"pepi demo: {child.name} ignored SIGTERM: killed", err=True)
                child.proc.kill()
                child.proc.wait()
        self.broker.stop()


def pick_port(requested: int, what: str) -> int:
    """``requested`` if free on loopback, else (saying so) any free port; 0 means any."""
    if requested == 0:
        return free_port()
    if port_is_free(requested):
        return requested
    port = free_port()
    click.echo(f"pepi demo: {what} port {requested} is in use, using {port} instead", err=True)
    return port


def print_ready(demo: Demo, statuses: dict[str, NodeStatus], seconds: float) -> None:
    """The URLs to open and the one-liners to try."""
    port = demo.broker.port
    pub = f"mosquitto_pub -h 127.0.0.1 -p {port} -q 1 -t {DEFAULT_ROOT}/capture"
    lines = [
        f"pepi demo: ready in {seconds:.1f} s ({len(statuses)} nodes online)",
        f"  broker    {demo.broker.url}  (anonymous on loopback: read {DEFAULT_ROOT}/#, trigger)",
        f"  web page  http://127.0.0.1:{demo.web_port}/",
    ]
    for node_id in demo.node_ids:
        status = statuses.get(node_id)
        streams = " ".join(status.stream_urls) if status and status.stream_urls else "-"
        lines.append(f"  {node_id:<9} {streams}")
    lines += [
        f"  captures  {demo.data_dir / 'captures'}",
        f"  logs      {demo.data_dir / 'logs'}",
        "",
        "Try (in another terminal):",
        f"  mosquitto_sub -h 127.0.0.1 -p {port} -v -t '{DEFAULT_ROOT}/nodes/+/result'",
        f"  {pub} -m scan-042",
        f"  {pub} -m {SCHEDULED_JSON}",
        f"  {pub} -n",
        f"  pepi capture --wait --broker {demo.broker.url}",
        "",
        f"Ctrl-C stops everything; images and logs stay in {demo.data_dir}",
    ]
    click.echo("\n".join(lines))


@click.command("demo")
@click.option(
    "--nodes",
    "node_count",
    type=click.IntRange(1, 99),
    default=3,
    show_default=True,
    help="Number of synthetic camera nodes (cam01, cam02, ...).",
)
@click.option(
    "--mqtt-port",
    type=click.IntRange(0, 65535),
    default=1883,
    show_default=True,
    help="Loopback port of the demo's mosquitto (taken or 0: any free port).",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port of the controller's web page (taken or 0: any free port).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for images, stores, broker and logs (default: a new temp folder, kept).",
)
@click.option(
    "--frame-lock/--no-frame-lock",
    default=True,
    show_default=True,
    help="Nodes share a wall-clock frame grid, like hardware-synchronised sensors.",
)
def demo_command(
    node_count: int, mqtt_port: int, web_port: int, data_dir: Path | None, frame_lock: bool
) -> None:
    """Run mosquitto, synthetic nodes and the controller on this machine; Ctrl-C stops all."""
    started = time.monotonic()
    since = time.time()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    data_dir = (data_dir or Path(tempfile.mkdtemp(prefix="pepi-demo-"))).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot use {data_dir}: {exc.strerror}") from exc
    click.echo(f"pepi demo: data in {data_dir}", err=True)
    demo = Demo(
        data_dir,
        [f"cam{i:02d}" for i in range(1, node_count + 1)],
        pick_port(mqtt_port, "MQTT"),
        pick_port(web_port, "web"),
        frame_lock,
    )
    code = 1
    try:
        demo.start()
        statuses = demo.wait_ready(stop, since)
        if not stop.is_set():
            print_ready(demo, statuses, time.monotonic() - started)
        code = demo.supervise(stop)
    except (PepiError, OSError) as exc:
        click.echo(f"pepi demo: {exc}", err=True)
    finally:
        click.echo("pepi demo: stopping", err=True)
        demo.shutdown()
    click.echo(f"pepi demo: stopped; images and logs are in {data_dir}", err=True)
    sys.exit(code)
