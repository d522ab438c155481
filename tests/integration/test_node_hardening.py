"""Issue 9 on the node: nothing a client sends silently disables it (real broker, real nodes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import StartNode, wait_online
from support.expect import capture_ok, loses_nothing, wait_result
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess
from support.processes import pepi_env
from support.pub import mosquitto_pub
from support.thrift_clients import fleet_server

from pepi_fleet.broker.runner import Credentials, EmbeddedBroker, free_port
from pepi_fleet.node.health import EXIT_UNHEALTHY
from pepi_fleet.schemas import CaptureResult, CaptureStatus, NodeStatus

FAULTY_NODE = Path(__file__).resolve().parents[1] / "support" / "faulty_node.py"


def _controller_pub(broker: EmbeddedBroker, topic: str, payload: str) -> None:
    """Publish as the ACL's controller (only it may write a node's set and clock topics)."""
    password = broker.users.get("controller") or broker.add_user("controller").password
    mosquitto_pub(broker.port, topic, payload, username="controller", password=password)


# -- 1. no input kills a thread -----------------------------------------------------------------


@pytest.mark.parametrize("depth", [2048, 3000])  # 4096 bytes, and over the 4 KB limit
def test_node_deeply_nested_capture_command_is_an_error_and_node_keeps_capturing(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode, depth: int
) -> None:
    node = start_node("cam1")
    with loses_nothing(broker, root, watcher, node):
        began = time.time()
        mosquitto_pub(broker.port, f"{root}/capture", "[" * depth + "]" * depth)
        error = wait_result(watcher, root, "cam1", status=CaptureStatus.ERROR, after=began)
        assert error.capture_id is None and f"{root}/capture" in (error.error or "")


def test_node_deeply_nested_settings_and_ping_are_logged_and_survived(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    deep = "[" * 3000 + "]" * 3000
    for leaf in ("set", "clock/ping"):
        _controller_pub(broker, f"{root}/nodes/cam1/{leaf}", deep)
    _controller_pub(broker, f"{root}/nodes/cam1/clock/ping", '{"seq": 7, "t1": 5.0}')
    watcher.wait_for(
        lambda s: s.topic == f"{root}/nodes/cam1/clock/pong" and b'"seq":7' in s.payload,
        what="pong after the deep ping",
    )
    capture_ok(broker, root, watcher, "cam1", "after")
    assert "bad settings" in node.log() and "bad clock ping" in node.log()


@pytest.mark.parametrize(
    "ahead",
    [
        pytest.param(None, id="1e300"),
        pytest.param(1e10, id="now+1e10"),
        pytest.param(2 * 86400.0, id="now+2d"),
    ],
)
def test_node_far_future_at_is_an_error_and_node_keeps_capturing(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode, ahead: float | None
) -> None:
    node = start_node("cam1")
    at = 1e300 if ahead is None else time.time() + ahead
    mosquitto_pub(broker.port, f"{root}/capture", json.dumps({"capture_id": "far", "at": at}))
    result = wait_result(watcher, root, "cam1", "far")
    assert result.status is CaptureStatus.ERROR
    assert "at too far ahead" in (result.error or ""), result.error
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert "far" not in {c.capture_id for c in server.list_captures()}
    capture_ok(broker, root, watcher, "cam1", "after")


def test_node_tiny_fps_settings_are_refused_and_nothing_is_applied(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    for payload in ('{"fps": 1e-300}', '{"fps": 0.001}', '{"resolution": [320, 240], "fps": 0}'):
        _controller_pub(broker, f"{root}/nodes/cam1/set", payload)
    # too large for the synthetic sensor (4056x3040), fine for the schema: refused whole
    _controller_pub(broker, f"{root}/nodes/cam1/set", '{"resolution": [5000, 4000], "fps": 10}')
    result = capture_ok(broker, root, watcher, "cam1", "after")
    assert result.fired_at is not None and result.fired_at - result.received_at < 0.5
    assert (result.frames[0].width, result.frames[0].height) == (640, 480)
    log = node.log()
    assert "greater than or equal to 1" in log and "nothing applied" in log
    assert "settings applied" not in log


# -- 4. a capture id is an idempotency key ------------------------------------------------------


def test_node_released_capture_id_stays_duplicate_across_a_restart(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    capture_ok(broker, root, watcher, "cam1", "scan-9")
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert server.release("scan-9") is True
    began = time.time()
    mosquitto_pub(broker.port, f"{root}/capture", "scan-9")
    again = wait_result(watcher, root, "cam1", "scan-9", CaptureStatus.DUPLICATE, after=began)
    assert again.frames == [] and "empty payload" in (again.error or ""), again.error
    began = time.time()
    node.stop()
    node.start()
    wait_online(watcher, root, node, after=began)
    mosquitto_pub(broker.port, f"{root}/capture", json.dumps({"capture_id": "scan-9"}))
    wait_result(watcher, root, "cam1", "scan-9", CaptureStatus.DUPLICATE, after=began)
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert "scan-9" not in {c.capture_id for c in server.list_captures()}
        # PEPI's clients re-use their codes: over Thrift the id is captured again
        server.start_capture("scan-9")
        assert len(server.retrieve_stills_jpg("scan-9")) == 1


def test_node_repeated_button_token_is_duplicate_naming_what_to_send(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("cam1")
    capture_ok(broker, root, watcher, "cam1", "PRESS")
    mosquitto_pub(broker.port, f"{root}/capture", "PRESS")
    result = wait_result(watcher, root, "cam1", "PRESS", CaptureStatus.DUPLICATE)
    error = result.error or ""
    assert "empty payload" in error and "new id" in error and "PRESS" in error, error
    mosquitto_pub(broker.port, f"{root}/capture", None)  # what the README tells buttons to send
    auto = wait_result(watcher, root, "cam1", status=CaptureStatus.OK, after=result.received_at)
    assert (auto.capture_id or "").startswith("auto-")


# -- 5. retained triggers never fire ------------------------------------------------------------


def test_node_live_retained_trigger_and_its_clear_are_late(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("cam1")
    topic = f"{root}/capture"

    def results(after: float) -> list[CaptureResult]:
        return [
            CaptureResult.model_validate_json(s.payload)
            for s in watcher.messages
            if s.topic == f"{root}/nodes/cam1/result" and s.at >= after
        ]

    began = time.time()
    try:
        mosquitto_pub(broker.port, topic, "ghost", "-r")
        ghost = wait_result(watcher, root, "cam1", "ghost", after=began)
        assert ghost.status is CaptureStatus.LATE and "retained" in (ghost.error or "")
    finally:
        cleared = time.time()
        mosquitto_pub(broker.port, topic, None, "-r")  # the clear is retained too
    clear = wait_result(watcher, root, "cam1", status=CaptureStatus.LATE, after=cleared)
    assert (clear.capture_id or "").startswith("auto-") and "retained" in (clear.error or "")
    capture_ok(broker, root, watcher, "cam1", "after")
    fired = [r.capture_id for r in results(began) if r.status is CaptureStatus.OK]
    assert fired == ["after"]


# -- 6. two nodes with one id -------------------------------------------------------------------


def test_node_id_clash_is_named_and_backed_off(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode, tmp_path: Path
) -> None:
    first = start_node("twin")
    twin = _twin_of(first, tmp_path)
    twin.start()
    try:
        began = time.time()
        time.sleep(14)  # a measurement window: how often do the two knock each other off?
        onlines = [
            s
            for s in watcher.messages
            if s.topic == f"{root}/nodes/twin/availability" and s.payload == b"online"
        ]
        in_window = [s for s in onlines if s.at >= began]
        log = first.log() + twin.log()
        assert "another client is using node id twin" in log, log[-3000:]
        # fighting back at once (the old way) reconnects every ~1 s: ~14 'online's here
        assert len(in_window) <= 6, [round(s.at - began, 1) for s in in_window]
    finally:
        twin.stop()


def _twin_of(node: NodeProcess, tmp_path: Path) -> NodeProcess:
    args = list(node.args)
    thrift, stream = free_port(), free_port()
    data_dir = tmp_path / "twin-2"
    for flag, value in (
        ("--data-dir", str(data_dir)),
        ("--thrift-port", str(thrift)),
        ("--stream-port", str(stream)),
    ):
        args[args.index(flag) + 1] = value
    return NodeProcess(
        args,
        node.creds,
        tmp_path / "twin-2.log",
        node_id=node.node_id,
        data_dir=data_dir,
        thrift_port=thrift,
        stream_port=stream,
    )


# -- 7. how late the trigger arrived ------------------------------------------------------------


def test_node_result_records_the_remaining_message_expiry(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("cam1")
    expiry = ("-V", "5", "-D", "publish", "message-expiry-interval", "60")
    mosquitto_pub(broker.port, f"{root}/capture", "exp-1", *expiry)
    result = wait_result(watcher, root, "cam1", "exp-1")
    assert result.status is CaptureStatus.OK
    assert result.expiry_remaining_s is not None and 58 <= result.expiry_remaining_s <= 60
    mosquitto_pub(broker.port, f"{root}/capture", "no-expiry")
    assert wait_result(watcher, root, "cam1", "no-expiry").expiry_remaining_s is None


# -- 3. health ----------------------------------------------------------------------------------


class FaultyNode:
    """``tests/support/faulty_node.py`` as a child process."""

    def __init__(self, broker: EmbeddedBroker, root: str, tmp_path: Path, stall_s: float) -> None:
        self.node_id = "faulty"
        self.creds: Credentials = broker.add_user(self.node_id)
        self.log_path = tmp_path / "faulty.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(FAULTY_NODE),
                    broker.url,
                    root,
                    self.node_id,
                    str(tmp_path / "faulty"),
                    str(stall_s),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=pepi_env(self.creds),
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def faulty(
    broker: EmbeddedBroker, root: str, watcher: Watcher, tmp_path: Path
) -> Iterator[FaultyNode]:
    node = FaultyNode(broker, root, tmp_path, stall_s=1.0)
    try:
        watcher.wait_topic(f"{root}/nodes/faulty/availability", b"online", timeout=20)
    except TimeoutError as exc:
        node.stop()
        raise AssertionError(f"faulty node never came online:\n{node.log()}") from exc
    yield node
    node.stop()


def _statuses(watcher: Watcher, root: str, after: float) -> Iterator[NodeStatus]:
    for seen in list(watcher.messages):
        if seen.topic == f"{root}/nodes/faulty/status" and seen.at >= after:
            yield NodeStatus.model_validate_json(seen.payload)


def test_node_exits_nonzero_and_goes_offline_when_the_capture_thread_dies(
    broker: EmbeddedBroker, root: str, watcher: Watcher, faulty: FaultyNode
) -> None:
    capture_ok(broker, root, watcher, "faulty", "before")
    began = time.time()
    mosquitto_pub(broker.port, f"{root}/capture", "die")
    try:
        code = faulty.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node still running with a dead capture thread:\n{faulty.log()[-3000:]}")
    assert code == EXIT_UNHEALTHY, faulty.log()[-3000:]
    watcher.wait_topic(f"{root}/nodes/faulty/availability", b"offline", after=began)
    assert "capture thread died" in faulty.log()


def test_node_health_is_degraded_while_the_camera_hangs_then_ok(
    broker: EmbeddedBroker, root: str, watcher: Watcher, faulty: FaultyNode
) -> None:
    began = time.time()
    assert all(s.health == "ok" for s in _statuses(watcher, root, 0))
    mosquitto_pub(broker.port, f"{root}/capture", "hang-2.5")

    def degraded(seen: Seen) -> bool:
        if seen.topic != f"{root}/nodes/faulty/status" or seen.at < began:
            return False
        return NodeStatus.model_validate_json(seen.payload).health.startswith("degraded: capture")

    watcher.wait_for(degraded, timeout=10, what="a degraded status")
    assert wait_result(watcher, root, "faulty", "hang-2.5").status is CaptureStatus.OK
    watcher.wait_for(
        lambda s: (
            s.topic == f"{root}/nodes/faulty/status"
            and s.at > began + 2.5
            and NodeStatus.model_validate_json(s.payload).health == "ok"
        ),
        timeout=10,
        what="an ok status again",
    )
    assert faulty.proc.poll() is None
