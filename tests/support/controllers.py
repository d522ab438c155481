"""Start a real ``pepi controller`` process for tests: wait for it, kill -9 it, restart it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.runner import Credentials, EmbeddedBroker, free_port
from controller.ledger import LEDGER_FILE
from schemas.controller import CaptureSetSummary
from support.mqtt_watch import Seen, Watcher

CONTROLLER_USER = "controller"


@dataclass
class ControllerProcess:
    """One ``pepi controller`` with its own data dir and log; restartable on the same dir."""

    broker_url: str
    root: str
    data_dir: Path
    creds: Credentials
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ControllerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "-v", "controller", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PEPI_MQTT_PASSWORD": self.creds.password},
        )
        log.close()
        return self

    def wait_online(self, watcher: Watcher, after: float, timeout: float = 20.0) -> None:
        """Block until this controller's retained ``online`` arrives (published after ``after``)."""
        try:
            watcher.wait_topic(
                f"{self.root}/controller/availability", b"online", timeout=timeout, after=after
            )
        except TimeoutError as exc:
            raise AssertionError(f"controller never came online:\n{self.log()[-3000:]}") from exc

    def kill(self) -> None:
        """kill -9: no clean shutdown, no ledger close; the broker publishes its Last Will."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, as a user's Ctrl-C; SIGKILL if it does not exit within 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / LEDGER_FILE

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def wait_log(self, text: str, timeout: float = 20.0, start: int = 0) -> int:
        """Wait until ``text`` appears in the log after character ``start``; its position.

        The log is a file, so this polls it; it is the controller's own record of
        decisions that publish nothing (presence changes).
        """
        deadline = time.monotonic() + timeout
        while True:
            pos = self.log().find(text, start)
            if pos >= 0:
                return pos
            if time.monotonic() > deadline:
                raise AssertionError(f"controller never logged {text!r}:\n{self.log()[-3000:]}")
            if not self.alive:
                raise AssertionError(f"controller exited before logging {text!r}:\n{self.log()}")
            time.sleep(0.1)

    def nodes(self) -> list[dict[str, Any]]:
        """``pepi nodes --json`` as the controller's user runs it on this broker."""
        out = subprocess.run(
            [sys.executable, "-m", "controller.cli", "nodes", "--json"]
            + ["--broker", self.broker_url, "--username", self.creds.username]
            + ["--topic-root", self.root],
            env={**os.environ, "PEPI_MQTT_PASSWORD": self.creds.password},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows


def controller_process(
    broker: EmbeddedBroker,
    root: str,
    base: Path,
    set_timeout_s: float = 5.0,
    name: str = "controller",
    *extra: str,
) -> ControllerProcess:
    """A configured (not yet started) controller logging in as the ACL's ``controller`` user."""
    password = broker.users.get(CONTROLLER_USER)
    creds = Credentials(CONTROLLER_USER, password) if password else broker.add_user(CONTROLLER_USER)
    data_dir = base / f"{name}-data"
    args = [
        "--broker",
        broker.url,
        "--username",
        creds.username,
        "--topic-root",
        root,
        "--data-dir",
        str(data_dir),
        "--web-port",
        str(free_port()),
        "--set-timeout",
        str(set_timeout_s),
        *extra,
    ]
    return ControllerProcess(broker.url, root, data_dir, creds, args, base / f"{name}.log")


StartController = Callable[..., ControllerProcess]


@contextmanager
def controller_starter(
    broker: EmbeddedBroker, root: str, watcher: Watcher, base: Path
) -> Iterator[StartController]:
    """``start(set_timeout_s=5.0, wait=True)``; every controller started is stopped on exit."""
    started: list[ControllerProcess] = []

    def start(set_timeout_s: float = 5.0, wait: bool = True) -> ControllerProcess:
        ctl = controller_process(broker, root, base, set_timeout_s, f"controller{len(started)}")
        started.append(ctl)
        restart(ctl, watcher, wait=wait)
        return ctl

    try:
        yield start
    finally:
        for ctl in started:
            ctl.stop()


def restart(ctl: ControllerProcess, watcher: Watcher, wait: bool = True) -> None:
    """Start (again, on the same data dir) and wait for its ``online``."""
    began = time.time()
    ctl.start()
    if wait:
        ctl.wait_online(watcher, after=began)


def wait_summary(
    watcher: Watcher,
    root: str,
    capture_id: str | Callable[[str], bool],
    timeout: float = 30.0,
    after: float = 0.0,
) -> CaptureSetSummary:
    """The controller's next summary on ``<root>/controller/captures`` for that set."""

    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/controller/captures" or seen.at < after:
            return False
        cid = CaptureSetSummary.model_validate_json(seen.payload).capture_id
        return capture_id(cid) if callable(capture_id) else cid == capture_id

    seen = watcher.wait_for(match, timeout, what=f"summary of {capture_id}")
    return CaptureSetSummary.model_validate_json(seen.payload)
