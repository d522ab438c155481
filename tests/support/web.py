"""A real ``pepi controller`` process with its web port, and waits on its REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from broker.runner import Credentials, EmbeddedBroker, free_port

T = TypeVar("T")


@dataclass
class ControllerProcess:
    """``pepi -v controller`` on the session broker, its page at ``url``."""

    root: str
    data_dir: Path
    web_port: int
    args: list[str]
    creds: Credentials
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

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

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the REST API answers and the controller is on the broker."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.log()}")
            try:
                return bool(
                    httpx.get(f"{self.url}/api/nodes", timeout=2).json()["broker_connected"]
                )
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, f"controller web API on {self.url}\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def controller_credentials(broker: EmbeddedBroker) -> Credentials:
    """The broker's ``controller`` login (created once, so running controllers keep theirs)."""
    if "controller" in broker.users:
        return Credentials("controller", broker.users["controller"])
    return broker.add_user("controller")


def controller_process(
    broker: EmbeddedBroker, root: str, base: Path, *extra: str, web_port: int | None = None
) -> ControllerProcess:
    """A configured (not yet started) controller with its own data dir and web port."""
    creds = controller_credentials(broker)
    data_dir = base / "controller-data"
    port = web_port if web_port is not None else free_port()
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
        str(port),
        "--set-timeout",
        "8",
        *extra,
    ]
    return ControllerProcess(root, data_dir, port, args, creds, base / "controller.log")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_nodes(client: httpx.Client, ids: set[str], state: str = "online") -> list[dict[str, Any]]:
    """Until every node in ``ids`` has ``state`` on ``GET /api/nodes``."""

    def check() -> list[dict[str, Any]] | None:
        nodes = client.get("/api/nodes").json()["nodes"]
        ok = {n["node_id"] for n in nodes if n["state"] == state}
        return nodes if ids <= ok else None

    return wait_until(check, 20, f"nodes {sorted(ids)} {state}")


def wait_set_downloaded(
    client: httpx.Client, capture_id: str, images: int, timeout: float = 30
) -> dict[str, Any]:
    """Until the set is complete with ``images`` verified images."""

    def check() -> dict[str, Any] | None:
        res = client.get(f"/api/captures/{capture_id}")
        if res.status_code != 200:
            return None
        body: dict[str, Any] = res.json()
        done = body["state"] == "complete" and body["images_done"] == images
        return body if done else None

    return wait_until(check, timeout, f"capture set {capture_id} with {images} images")
