"""The web tests' ``pepi controller`` (see ``support.controllers``) and waits on its REST API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pepi_fleet.broker.runner import EmbeddedBroker
from support import controllers
from support.controllers import ControllerProcess

T = TypeVar("T")


def controller_process(
    broker: EmbeddedBroker, root: str, base: Path, *extra: str, web_port: int | None = None
) -> ControllerProcess:
    """A configured (not yet started) controller with its own data dir, web port, 8 s sets."""
    return controllers.controller_process(
        broker, root, base, 8, "controller", *extra, web_port=web_port
    )


def wait_ready(ctl: ControllerProcess, timeout: float = 20.0) -> ControllerProcess:
    """Until the REST API answers and the controller is on the broker; ``ctl``."""

    def ready() -> bool:
        if ctl.proc is not None and ctl.proc.poll() is not None:
            raise AssertionError(f"controller exited {ctl.proc.returncode}:\n{ctl.log()}")
        try:
            return bool(httpx.get(f"{ctl.url}/api/nodes", timeout=2).json()["broker_connected"])
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, f"controller web API on {ctl.url}\n{ctl.log()[-3000:]}")
    return ctl


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
