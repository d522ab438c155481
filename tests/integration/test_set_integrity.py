"""A set says when it is not whole, immediate triggers expire, and nobody triggers into a void."""

from __future__ import annotations

import subprocess
import threading

import httpx
import paho.mqtt.client as mqtt
from conftest import StartNode
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.controllers import StartController, wait_summary
from support.mqtt_watch import Watcher
from support.processes import PEPI, resume, suspend
from support.pub import mosquitto_pub
from support.web import wait_nodes, wait_until

from pepi_fleet.broker.runner import EmbeddedBroker


def test_set_integrity_node_that_never_answers_makes_the_set_incomplete(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    start_node("cam1")
    frozen = start_node("cam2")
    ctl = start_controller(set_timeout_s=3.0)
    with httpx.Client(base_url=ctl.url, timeout=5) as client:
        wait_nodes(client, {"cam1", "cam2"})
        assert frozen.proc is not None
        suspend(frozen.proc)  # a hung machine: still "online" to the controller for a while
        try:
            mosquitto_pub(broker.port, f"{root}/capture", "gap-1")
            summary = wait_summary(watcher, root, "gap-1", timeout=30)
            assert not summary.complete
            assert summary.missing == ["cam2"]
            assert any("cam2 never answered" in p for p in summary.problems)
            body = wait_until(
                lambda: (r := client.get("/api/captures/gap-1").json())["state"] != "open" and r,
                20,
                "set gap-1 closed",
            )
            assert body["state"] == "incomplete"
        finally:
            resume(frozen.proc)


def test_set_integrity_api_triggers_expire_when_immediate(
    broker: EmbeddedBroker, root: str, start_node: StartNode, start_controller: StartController
) -> None:
    start_node("cam1")
    ctl = start_controller("--trigger-expiry", "3")
    seen: list[tuple[str, int | None]] = []
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        seen.append((msg.payload.decode(), expiry))
        got.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(f"{root}/capture", qos=1)
    sub.loop_start()
    try:
        with httpx.Client(base_url=ctl.url, timeout=5) as client:
            wait_nodes(client, {"cam1"})
            res = client.post("/api/captures", json={"capture_id": "now-1"})
            assert res.status_code == 202, res.text
            assert got.wait(10), "the trigger never reached the broker"
            got.clear()
            res = client.post("/api/captures", json={"capture_id": "later-1", "delay": 0.5})
            assert res.status_code == 202, res.text
            assert got.wait(10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    immediate, scheduled = seen[:2]
    assert '"now-1"' in immediate[0] and immediate[1] is not None and 0 < immediate[1] <= 3
    assert '"later-1"' in scheduled[0] and scheduled[1] is None  # `at` decides lateness there


def test_set_integrity_cli_capture_with_no_node_online_fails_fast(
    broker: EmbeddedBroker, root: str, watcher: Watcher
) -> None:
    url = f"mqtt://127.0.0.1:{broker.port}"
    out = subprocess.run(
        [*PEPI, "capture", "void-1", "--broker", url, "--topic-root", root],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "no node is online" in out.stderr and "nothing was triggered" in out.stderr
    assert not [m for m in watcher.messages if m.topic == f"{root}/capture"]
