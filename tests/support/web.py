"""The web tests' ``pepi controller`` (see ``support.controllers``) and waits on its REST API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pepi_fleet.broker.runner import EmbeddedBroker
from support import controllers
from support.controllers import ControllerProcess
from support.processes import PEPI

T = TypeVar("T")


def controller_process(
    broker: EmbeddedBroker, root: str, base: Path, *extra: str, web_port: int | None = None
) -> ControllerProcess:
    """A configured (not yet started) controller with its own data dir, web port, 8 s sets."""
    return controllers.controller_process(
        broker, root, base, 8, "controller", *extra, web_port=web_port
    )


def wait_ready(
    ctl: ControllerProcess, timeout: float = 20.0, token: str | None = None, **client: Any
) -> ControllerProcess:
    """Until the REST API answers and the controller is on the broker; ``ctl``.

    ``token``: an API token, for a controller that requires a login; ``client``: more
    httpx options (``verify`` for HTTPS).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def ready() -> bool:
        if ctl.proc is not None and ctl.proc.poll() is not None:
            raise AssertionError(f"controller exited {ctl.proc.returncode}:\n{ctl.log()}")
        try:
            res = httpx.get(f"{ctl.url}/api/nodes", timeout=2, headers=headers, **client)
            return bool(res.json()["broker_connected"])
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, f"controller web API on {ctl.url}\n{ctl.log()[-3000:]}")
    return ctl


@contextmanager
def event_stream(
    base_url: str, timeout: float = 30.0, params: dict[str, str] | None = None
) -> Iterator[Iterator[tuple[str, Any]]]:
    """The controller's ``/api/events``, as (event name, decoded data) pairs in order.

    The consumer breaks off once it saw what it waits for; the stream fails the test if that
    takes longer than ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(base_url=base_url, timeout=httpx.Timeout(5, read=20)) as sse,
        sse.stream("GET", "/api/events", params=params) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")

        def events() -> Iterator[tuple[str, Any]]:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind:
                    yield kind, json.loads(line.removeprefix("data: "))
                if time.monotonic() > deadline:
                    raise AssertionError(f"/api/events: not seen what was awaited in {timeout} s")

        yield events()


@contextmanager
def serving(ctl: ControllerProcess, token: str | None = None) -> Iterator[ControllerProcess]:
    """``ctl`` started and ready (``token``: as for ``wait_ready``); stopped after, and it must
    exit cleanly (0)."""
    ctl.start()
    try:
        yield wait_ready(ctl, token=token)
    finally:
        code = ctl.stop()
        assert code == 0, f"controller exited {code}:\n{ctl.log()[-3000:]}"


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


def pepi(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``pepi ARGS`` as a user types it (no PEPI_* settings of ours leak in); must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEPI_")}
    out = subprocess.run(
        [*PEPI, *args], input=stdin, capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, f"pepi {' '.join(args)} failed:\n{out.stdout}{out.stderr}"
    return out


def add_user(data_dir: Path, name: str, role: str, password: str) -> None:
    """``pepi controller --data-dir D user add NAME --role ROLE``, the password on the prompt."""
    pepi(
        "controller", "--data-dir", str(data_dir), "user", "add", name, "--role", role,
        stdin=f"{password}\n{password}\n",
    )  # fmt: skip


def add_token(data_dir: Path, name: str, role: str) -> str:
    """``pepi controller --data-dir D token add NAME --role ROLE``: the token it prints."""
    out = pepi("controller", "--data-dir", str(data_dir), "token", "add", name, "--role", role)
    return out.stdout.strip()
