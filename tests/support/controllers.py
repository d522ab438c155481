"""Start a real ``pepi controller`` process for tests: wait for it, kill -9 it, restart it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from pepi_fleet.broker.runner import Credentials, EmbeddedBroker, free_port
from pepi_fleet.controller.ledger import LEDGER_FILE
from pepi_fleet.controller.manifest import MANIFEST_FILE, Manifest
from pepi_fleet.node.encode import read_exif_timestamp
from pepi_fleet.schemas import CaptureResult, NodeStatus
from pepi_fleet.schemas.controller import CaptureSetSummary
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess
from support.processes import PEPI, PepiProcess, pepi_env, resume, suspend
from support.thrift_clients import fleet_server

CONTROLLER_USER = "controller"
AUTOMATION_USER = "automation"


@dataclass
class ControllerProcess(PepiProcess):
    """One ``pepi controller`` with its own data dir and log; restartable on the same dir."""

    subcommand: ClassVar[str] = "controller"
    stop_timeout: ClassVar[float] = 15.0

    broker_url: str
    root: str
    data_dir: Path
    web_port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """Its web page and REST API."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.web_port}"

    def wait_online(self, watcher: Watcher, after: float, timeout: float = 20.0) -> None:
        """Block until this controller's retained ``online`` arrives (published after ``after``)."""
        try:
            watcher.wait_topic(
                f"{self.root}/controller/availability", b"online", timeout=timeout, after=after
            )
        except TimeoutError as exc:
            raise AssertionError(f"controller never came online:\n{self.log()[-3000:]}") from exc

    def freeze(self) -> None:
        """SIGSTOP: connected but deaf; what the broker sends waits in the socket."""
        assert self.proc is not None
        suspend(self.proc)

    def thaw(self) -> None:
        """SIGCONT: carry on with whatever arrived while frozen."""
        assert self.proc is not None
        resume(self.proc)

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / LEDGER_FILE

    def wait_log(self, text: str, timeout: float = 20.0, start: int = 0) -> int:
        """Wait until ``text`` appears in the log after character ``start``; its position.

        The log is a file, so this polls it. Prefer waiting on what a user sees:
        ``wait_nodes`` (``GET /api/nodes``), retained topics, published summaries.
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

    def api_nodes(self) -> dict[str, dict[str, Any]] | None:
        """The nodes of its ``GET /api/nodes`` by id; None while the web API is not up."""
        try:
            res = httpx.get(f"{self.url}/api/nodes", timeout=5)
        except httpx.TransportError:
            return None
        return {n["node_id"]: n for n in res.json()["nodes"]} if res.status_code == 200 else None

    def wait_nodes(
        self, check: Callable[[dict[str, dict[str, Any]]], bool], what: str, timeout: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """Poll ``GET /api/nodes`` until ``check(nodes by id)``; those nodes."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.api_nodes()
            if nodes is not None and check(nodes):
                return nodes
            if not self.alive:
                raise AssertionError(f"controller exited while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {timeout} s: {what}; /api/nodes has {nodes}\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)

    def wait_states(
        self, states: dict[str, str], timeout: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """Until ``GET /api/nodes`` lists exactly these nodes in these states; the nodes."""

        def reached(nodes: dict[str, dict[str, Any]]) -> bool:
            return {node_id: n["state"] for node_id, n in nodes.items()} == states

        return self.wait_nodes(reached, f"node states {states}", timeout)

    def nodes(self) -> list[dict[str, Any]]:
        """``pepi nodes --json`` as the controller's user runs it on this broker."""
        command = ["nodes", "--json", "--broker", self.broker_url, "--topic-root", self.root]
        out = subprocess.run(
            [*PEPI, *command, "--username", self.creds.username],
            env=pepi_env(self.creds),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows


def controller_credentials(broker: EmbeddedBroker) -> Credentials:
    """The broker's ``controller`` login (created once, so running controllers keep theirs)."""
    password = broker.users.get(CONTROLLER_USER)
    return Credentials(CONTROLLER_USER, password) if password else broker.add_user(CONTROLLER_USER)


def automation_credentials(broker: EmbeddedBroker) -> Credentials:
    """The broker's ``automation`` login (Home Assistant's, scripts'), created once."""
    password = broker.users.get(AUTOMATION_USER)
    return Credentials(AUTOMATION_USER, password) if password else broker.add_user(AUTOMATION_USER)


def controller_process(
    broker: EmbeddedBroker,
    root: str,
    base: Path,
    set_timeout_s: float = 5.0,
    name: str = "controller",
    *extra: str,
    web_port: int | None = None,
) -> ControllerProcess:
    """A configured (not yet started) controller logging in as the ACL's ``controller`` user,
    its web page on ``web_port`` (a free port if None)."""
    creds = controller_credentials(broker)
    data_dir = base / f"{name}-data"
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
        str(set_timeout_s),
        *extra,
    ]
    return ControllerProcess(
        args,
        creds,
        base / f"{name}.log",
        broker_url=broker.url,
        root=root,
        data_dir=data_dir,
        web_port=port,
    )


StartController = Callable[..., ControllerProcess]


@contextmanager
def controller_starter(
    broker: EmbeddedBroker, root: str, watcher: Watcher, base: Path
) -> Iterator[StartController]:
    """``start(*extra_args, set_timeout_s=5.0, wait=True)``; every controller started is
    stopped on exit."""
    started: list[ControllerProcess] = []

    def start(*extra: str, set_timeout_s: float = 5.0, wait: bool = True) -> ControllerProcess:
        name = f"controller{len(started)}"
        ctl = controller_process(broker, root, base, set_timeout_s, name, *extra)
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
    *,
    downloaded: bool = False,
) -> CaptureSetSummary:
    """The controller's next summary on ``<root>/controller/captures`` for that set; with
    ``downloaded``, the one that says every image is in (a set is summarised when its results
    are in, and again once its downloads are)."""

    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/controller/captures" or seen.at < after:
            return False
        summary = CaptureSetSummary.model_validate_json(seen.payload)
        if downloaded and not summary.downloaded:
            return False
        cid = summary.capture_id
        return capture_id(cid) if callable(capture_id) else cid == capture_id

    seen = watcher.wait_for(match, timeout, what=f"summary of {capture_id}")
    return CaptureSetSummary.model_validate_json(seen.payload)


def pepi_name(set_id: str, node_id: str, camera: int) -> str:
    """PEPI's file name for one camera's JPEG of one node in a set."""
    return f"id{node_id}_d{set_id}_cam{camera}.jpeg"


def assert_set_on_disk(data_dir: Path, set_id: str, results: list[CaptureResult]) -> None:
    """Every frame of ``results`` is in ``<data_dir>/<set_id>/`` once, PEPI-named, byte-exact.

    Checks the sha256 against the node's result and the manifest, the EXIF frame time
    against the result, that nothing else (no half-written temp file) is in the folder,
    that the manifest keeps each frame's applied camera controls and sync state as the
    node reported them, and that it records how well the clocks agreed (see
    ``assert_manifest_clocks``).
    """
    folder = data_dir / set_id
    frames = {pepi_name(set_id, r.node_id, f.camera): f for r in results for f in r.frames}
    assert frames, "no frames expected: the test is wrong"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*frames, MANIFEST_FILE])
    for name, frame in frames.items():
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame.sha256, name
        assert read_exif_timestamp(data) == pytest.approx(frame.timestamp, abs=1e-6), name
    manifest = manifest_with_clocks(folder / MANIFEST_FILE)
    assert_manifest_clocks(manifest, results)
    assert manifest.capture_id == set_id and manifest.downloaded
    assert sorted(manifest.files) == sorted(frames)  # each file listed exactly once
    listed = {
        f.file: f.sha256 for node in manifest.nodes for f in node.frames if f.file is not None
    }
    assert listed == {name: f.sha256 for name, f in frames.items()}
    described = {
        f.file: (f.controls, f.in_sync) for node in manifest.nodes for f in node.frames if f.file
    }
    assert described == {name: (f.controls, f.in_sync) for name, f in frames.items()}


CLOCK_KEYS = {"clock_uncertainty_s", "fired_spread_s"}
NODE_CLOCK_KEYS = {"clock_offset_s", "clock_rtt_s"}


def manifest_with_clocks(path: Path, timeout: float = 10.0) -> Manifest:
    """The manifest once it carries every node's measured clock.

    The controller probes a node's clock when it comes online; a controller restarted
    mid-set may write a manifest before the answer is in, and writes it again when the
    set's downloads are done.
    """

    def measured() -> bool:
        raw = json.loads(path.read_bytes())
        assert raw.keys() >= CLOCK_KEYS, f"manifest lacks {CLOCK_KEYS - raw.keys()}"
        for node in raw["nodes"]:
            assert node.keys() >= NODE_CLOCK_KEYS, f"{node['node_id']}: lacks clock fields"
        return raw["clock_uncertainty_s"] is not None and all(
            n["clock_offset_s"] is not None and n["clock_rtt_s"] is not None for n in raw["nodes"]
        )

    wait_until(measured, f"every node's clock offset in {path}", timeout)
    return Manifest.model_validate_json(path.read_bytes())


def assert_manifest_clocks(manifest: Manifest, results: list[CaptureResult]) -> None:
    """Clock fields of a set whose nodes' clocks the controller measured (all on this host)."""
    rtts = []
    for node in manifest.nodes:
        offset, rtt = node.clock_offset_s, node.clock_rtt_s
        assert offset is not None and rtt is not None, node
        # One machine, one clock: the true offset is 0, and an NTP estimate is never
        # further from the truth than half its round trip.
        assert rtt >= 0 and abs(offset) <= rtt / 2 + 1e-4, (node.node_id, offset, rtt)
        rtts.append(rtt)
    assert manifest.clock_uncertainty_s == pytest.approx(max(rtts) / 2)
    if any(r.fired_at is not None for r in results):
        assert manifest.fired_spread_s is not None and manifest.fired_spread_s >= 0


def ledger_states(ctl: ControllerProcess) -> dict[tuple[str, str, int], str]:
    """``(set, node, camera) -> download state`` read from the controller's SQLite ledger."""
    db = sqlite3.connect(f"file:{ctl.ledger_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT set_id, node_id, camera, state FROM owed_images").fetchall()
    finally:
        db.close()
    return {(str(s), str(n), int(c)): str(state) for s, n, c, state in rows}


def wait_store_empty(watcher: Watcher, root: str, node: NodeProcess, after: float) -> None:
    """Wait for a heartbeat (sent after ``after``) saying the node holds no capture, then
    check over Thrift that ``list_captures`` is empty: the controller released everything."""

    def empty(seen: Seen) -> bool:
        if seen.topic != f"{root}/nodes/{node.node_id}/status" or seen.at < after:
            return False
        return NodeStatus.model_validate_json(seen.payload).store.captures == 0

    watcher.wait_for(empty, timeout=30, what=f"empty store on {node.node_id}")
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert [c.capture_id for c in server.list_captures()] == []


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` (state kept in files has no event to wait on) until true or timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
