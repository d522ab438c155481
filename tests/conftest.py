"""Shared fixtures: a real mosquitto from the project's config, real nodes and controllers."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.controllers import ControllerProcess, StartController, controller_starter
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess, node_process

from pepi_fleet.broker.runner import EmbeddedBroker

TEST_ROOT_PATTERN = "pepi-t/+"
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # bench/ is a folder of the checkout, not of the wheel: importable by every test module;
    # appended, so that pepi_fleet stays whichever one the suite runs against
    sys.path.append(str(REPO))
from bench.chromium import CHROMIUM, CHROMIUM_ARGS, chromium_missing  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under ``./run.sh test-wheel`` the package must come from the wheel, not the checkout."""
    if os.environ.get("PEPI_EXPECT_INSTALLED") == "1":
        import pepi_fleet

        where = Path(pepi_fleet.__file__).resolve()
        if where.is_relative_to(REPO / "pepi_fleet"):
            raise pytest.UsageError(f"pepi_fleet imported from the checkout ({where}), not a wheel")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One mosquitto for the session, the project's ACL applied to every test root."""
    b = EmbeddedBroker(root=TEST_ROOT_PATTERN, workdir=tmp_path_factory.mktemp("broker"))
    b.add_user("controller")
    b.start()
    yield b
    b.close()


@pytest.fixture
def root() -> str:
    """A topic root of this test's own, so tests never see each other's messages."""
    return f"pepi-t/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def watcher(broker: EmbeddedBroker, root: str) -> Iterator[Watcher]:
    """Anonymous observer of everything under the test's root."""
    w = Watcher(broker.port, [f"{root}/#"])
    yield w
    w.close()


StartNode = Callable[..., NodeProcess]


@pytest.fixture
def start_node(
    broker: EmbeddedBroker, root: str, watcher: Watcher, tmp_path: Path
) -> Iterator[StartNode]:
    """Start a real ``pepi node`` process and wait until its retained ``online`` arrives."""
    started: list[NodeProcess] = []

    def start(node_id: str | None = None, *extra: str, wait: bool = True) -> NodeProcess:
        node_id = node_id or f"n{uuid.uuid4().hex[:6]}"
        node = node_process(broker, root, node_id, tmp_path, *extra)
        started.append(node.start())
        if wait:
            wait_online(watcher, root, node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def start_controller(
    broker: EmbeddedBroker, root: str, watcher: Watcher, tmp_path: Path
) -> Iterator[StartController]:
    """``start(set_timeout_s=5.0, wait=True)`` a real ``pepi controller``; all stopped after."""
    with controller_starter(broker, root, watcher, tmp_path) as start:
        yield start


StartCam1 = Callable[..., tuple[NodeProcess, ControllerProcess]]


@pytest.fixture
def start_cam1(start_node: StartNode, start_controller: StartController) -> StartCam1:
    """``start(*controller_args)``: node cam1, then a controller that has seen it come online;
    (node, controller)."""

    def start(*extra: str) -> tuple[NodeProcess, ControllerProcess]:
        node = start_node("cam1")
        ctl = start_controller(*extra)
        ctl.wait_log("node cam1: None -> online")
        return node, ctl

    return start


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's) driven by Playwright, one per test module."""
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_online(watcher: Watcher, root: str, node: NodeProcess, after: float = 0.0) -> None:
    try:
        watcher.wait_topic(
            f"{root}/nodes/{node.node_id}/availability", b"online", timeout=20, after=after
        )
    except TimeoutError as exc:
        raise AssertionError(f"node never came online:\n{node.log()[-3000:]}") from exc
