"""Adaptive lead: ``pepi capture --delay auto`` schedules far enough ahead for every node to
arm in time, a node behind a slow link raises the lead, and a node that armed late is named;
Home Assistant's *Adaptive delay* switch makes its scheduled capture use the lead too."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import StartCam1, StartNode
from support.controllers import (
    ControllerProcess,
    StartController,
    automation_credentials,
    wait_summary,
    wait_until,
)
from support.expect import wait_result
from support.mqtt_watch import Seen, Watcher
from support.processes import PEPI
from support.pub import mosquitto_pub

from bench.delay_proxy import PROFILES, ProxyProcess, Route
from pepi_fleet.broker.runner import EmbeddedBroker, free_port
from pepi_fleet.controller.home_assistant import ControllerState
from pepi_fleet.controller.trigger_lead import CEILING_S
from pepi_fleet.schemas import CaptureCommand, CaptureSetSummary, CaptureStatus

FAR = PROFILES["far"]
SLOW_ONE_WAY_MS = FAR.delay_ms


@pytest.fixture
def slow_link(broker: EmbeddedBroker) -> Iterator[int]:
    """A port on 127.0.0.1 that reaches the broker 250 ms later each way."""
    port = free_port()
    proxy = ProxyProcess(FAR, [Route(port, "127.0.0.1", broker.port)]).start()
    try:
        yield port
    finally:
        proxy.stop()


def _status(ctl: ControllerProcess) -> dict[str, Any]:
    res = httpx.get(f"{ctl.url}/api/status", timeout=5)
    res.raise_for_status()
    body: dict[str, Any] = res.json()
    return body


def _clocks_measured(ctl: ControllerProcess, nodes: set[str]) -> None:
    def measured() -> bool:
        seen = ctl.api_nodes() or {}
        return all(seen.get(n, {}).get("clock_rtt_s") is not None for n in nodes)

    wait_until(measured, f"clock probes of {sorted(nodes)}")


def _measure(
    ctl: ControllerProcess, root: str, watcher: Watcher, capture_id: str, nodes: list[str]
) -> None:
    """An immediate capture by the controller (it knows when it sent it): every node's
    result is one delivery-latency sample."""
    res = httpx.post(f"{ctl.url}/api/captures", json={"capture_id": capture_id}, timeout=10)
    assert res.status_code == 202, res.text
    for node in nodes:
        wait_result(watcher, root, node, capture_id)
    wait_summary(watcher, root, capture_id)


def _state_says(watcher: Watcher, root: str, lead_s: float) -> None:
    """Until the controller's retained state (what ``--delay auto`` reads) carries the lead."""

    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/controller/state":
            return False
        return ControllerState.model_validate_json(seen.payload).trigger_lead_s == round(lead_s, 3)

    watcher.wait_for(match, 10, what=f"controller state with lead {lead_s:.3f} s")


def _pepi_capture(broker: EmbeddedBroker, root: str, capture_id: str, delay: str) -> str:
    url = f"mqtt://127.0.0.1:{broker.port}"
    out = subprocess.run(
        [*PEPI, "capture", capture_id, "--delay", delay, "--broker", url, "--topic-root", root],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def _armed_in_time(watcher: Watcher, root: str, summary: CaptureSetSummary) -> None:
    assert summary.late_nodes == []
    for node in summary.expected:
        result = wait_result(watcher, root, node, summary.capture_id)
        assert result.status is CaptureStatus.OK
        assert result.at is not None and result.received_at < result.at, node


def test_trigger_lead_auto_delay_arms_every_node_and_slow_link_raises_it(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
    slow_link: int,
) -> None:
    start_node("cam1")
    start_node("cam2")
    ctl = start_controller()
    ctl.wait_nodes(lambda n: {"cam1", "cam2"} <= n.keys(), "both nodes listed")
    _clocks_measured(ctl, {"cam1", "cam2"})
    before = _status(ctl)
    assert before["latency_nodes"] == 0  # nothing measured yet: the default lead

    _measure(ctl, root, watcher, "warm-1", ["cam1", "cam2"])
    wait_until(lambda: _status(ctl)["latency_nodes"] == 2, "latency of both nodes")
    fast = _status(ctl)
    assert fast["trigger_latency_s"] < SLOW_ONE_WAY_MS / 1000

    _state_says(watcher, root, fast["trigger_lead_s"])
    said = _pepi_capture(broker, root, "auto-1", "auto")
    assert f"delay auto: {fast['trigger_lead_s']:.3f} s" in said
    _armed_in_time(watcher, root, wait_summary(watcher, root, "auto-1"))

    # A third node 250 ms away: its first trigger is measured, and the lead grows past it.
    start_node("slow", "--broker", f"mqtt://127.0.0.1:{slow_link}")
    ctl.wait_nodes(lambda n: n.get("slow", {}).get("state") == "online", "slow node online")
    _clocks_measured(ctl, {"slow"})
    _measure(ctl, root, watcher, "warm-2", ["cam1", "cam2", "slow"])
    wait_until(lambda: _status(ctl)["slowest_node"] == "slow", "the slow node's latency")
    slow = _status(ctl)
    # within the clock-offset estimate's error, which a loaded machine makes tens of ms
    assert slow["trigger_latency_s"] >= SLOW_ONE_WAY_MS / 1000 * 0.7
    assert slow["trigger_lead_s"] > slow["trigger_latency_s"] > fast["trigger_latency_s"]

    # Too short a delay for it: the slow node gets the trigger after `at` and is named.
    _pepi_capture(broker, root, "short-1", "0.1")
    short = wait_summary(watcher, root, "short-1")
    assert "slow" in short.late_nodes
    for node in short.expected:  # named exactly when its trigger came after `at`
        result = wait_result(watcher, root, node, "short-1")
        assert result.at is not None
        assert (node in short.late_nodes) == (result.received_at > result.at), node
    assert not short.complete  # it fired on receipt, far outside the tolerance

    _pepi_capture(broker, root, "auto-2", "auto")
    auto = wait_summary(watcher, root, "auto-2")
    assert auto.expected == ["cam1", "cam2", "slow"]
    _armed_in_time(watcher, root, auto)


def _ha_command(broker: EmbeddedBroker, root: str, **fields: object) -> float:
    """What Home Assistant's controller entities send, as its ``automation`` login; when."""
    creds = automation_credentials(broker)
    sent = time.time()
    topic = f"{root}/controller/command"
    mosquitto_pub(
        broker.port, topic, json.dumps(fields), username=creds.username, password=creds.password
    )
    return sent


def _ha_state(
    watcher: Watcher, root: str, check: Callable[[ControllerState], bool], after: float
) -> ControllerState:
    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/controller/state" or seen.at < after:
            return False
        return check(ControllerState.model_validate_json(seen.payload))

    seen = watcher.wait_for(match, 10, what="the controller's state")
    return ControllerState.model_validate_json(seen.payload)


def _ha_trigger(watcher: Watcher, root: str, after: float) -> CaptureCommand:
    seen = watcher.wait_topic(f"{root}/capture", after=after)
    return CaptureCommand.model_validate_json(seen.payload)


def test_trigger_lead_home_assistant_adaptive_delay_switch(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_cam1: StartCam1,
) -> None:
    start_cam1()
    fixed_s = 60.0
    sent = _ha_command(broker, root, action="set_schedule_delay", value=fixed_s)
    _ha_state(watcher, root, lambda s: s.schedule_delay_s == fixed_s, sent)

    # Switched on: the scheduled capture fires the adaptive lead ahead, not the fixed 60 s,
    # and the retained state says so.
    sent = _ha_command(broker, root, action="set_adaptive_delay", enabled=True)
    state = _ha_state(watcher, root, lambda s: s.adaptive_delay, sent)
    assert state.schedule_delay_s == fixed_s and state.trigger_lead_s is not None
    sent = _ha_command(broker, root, action="capture_scheduled")
    trigger = _ha_trigger(watcher, root, sent)
    assert trigger.at is not None and trigger.capture_id is not None
    assert trigger.at - sent < CEILING_S < fixed_s  # never more than the lead's ceiling
    summary = wait_summary(watcher, root, trigger.capture_id)
    assert summary.expected == ["cam1"] and summary.complete
    result = wait_result(watcher, root, "cam1", trigger.capture_id)
    assert result.status is CaptureStatus.OK and result.at == trigger.at
    assert result.received_at < trigger.at  # armed in time

    # Switched off: back to the fixed delay.
    sent = _ha_command(broker, root, action="set_adaptive_delay", enabled=False)
    _ha_state(watcher, root, lambda s: not s.adaptive_delay, sent)
    sent = _ha_command(broker, root, action="capture_scheduled")
    trigger = _ha_trigger(watcher, root, sent)
    assert trigger.at is not None and trigger.at - sent >= fixed_s
