"""Nodes and the controller appear in a real Home Assistant, and HA drives the rig.

A dedicated mosquitto on root ``pepi/v1`` (the production root and discovery prefix), two
real nodes, a real controller and a real Home Assistant core (``./run.sh test`` installs it
in its own Python 3.13 venv) configured through its onboarding and MQTT config flow.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import controllers
from support.home_assistant import HomeAssistant, ha_python
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess, node_process
from support.processes import PEPI, pepi_env

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.home_assistant import ControllerState
from pepi_fleet.controller.trigger_lead import CEILING_S
from pepi_fleet.schemas import CaptureCommand, CaptureResult, CaptureStatus

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        not ha_python().exists(),
        reason=f"no Home Assistant venv at {ha_python().parent.parent} (./run.sh setup makes it)",
    ),
]
ROOT = "pepi/v1"
NODES = ("cam01", "cam02")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    broker = EmbeddedBroker(root=ROOT, workdir=tmp_path / "broker")
    (tmp_path / "broker").mkdir()
    automation = broker.add_user("automation")
    broker.add_user("controller")
    broker.start()
    watcher = Watcher(
        broker.port, [f"{ROOT}/#", "homeassistant/#"], automation.username, automation.password
    )
    nodes: list[NodeProcess] = []
    ctl = controllers.controller_process(broker, ROOT, tmp_path, 3.0, "controller")
    ha = HomeAssistant(tmp_path / "ha")
    try:
        for node_id in NODES:
            nodes.append(node_process(broker, ROOT, node_id, tmp_path).start())
        ctl.start()
        yield {
            "broker": broker, "watcher": watcher, "ha": ha, "ctl": ctl, "auto": automation,
            "nodes": {n.node_id: n for n in nodes},
        }  # fmt: skip
    finally:
        ha.stop()
        ctl.stop()
        for node in nodes:
            node.stop()
        watcher.close()
        broker.close()


def _available(states: dict[str, dict[str, Any]], *ids: str) -> bool:
    return all(i in states and states[i]["state"] != "unavailable" for i in ids)


def _connected(rig: dict[str, Any]) -> tuple[HomeAssistant, Watcher]:
    """Home Assistant started, its owner created and its MQTT integration on the rig's broker."""
    ha: HomeAssistant = rig["ha"]
    ha.start()
    ha.onboard()
    ha.add_mqtt(rig["broker"].port, rig["auto"].username, rig["auto"].password)
    return ha, rig["watcher"]


def test_home_assistant_sees_every_node_and_the_controller_and_drives_them(
    rig: dict[str, Any],
) -> None:
    ha, watcher = _connected(rig)

    wanted = [
        *(f"button.pepi_{n}_capture" for n in NODES),
        *(f"sensor.pepi_{n}_captures_held" for n in NODES),
        *(f"sensor.pepi_{n}_store_free" for n in NODES),
        *(f"binary_sensor.pepi_{n}_problem" for n in NODES),
        *(f"sensor.pepi_{n}_health" for n in NODES),
        "image.pepi_cam01_last_image",
        "camera.pepi_cam01_preview",
        "button.pepi_controller_capture_all",
        "sensor.pepi_controller_nodes_online",
        "sensor.pepi_controller_nodes_unreachable",
        "sensor.pepi_controller_trigger_lead",
        "event.pepi_controller_capture_set",
        "number.pepi_controller_schedule_delay",
        "switch.pepi_controller_adaptive_delay",
    ]
    states = ha.wait_states(lambda s: _available(s, *wanted), 90, f"entities {wanted}")
    assert states["sensor.pepi_cam01_health"]["state"] == "ok"
    assert states["binary_sensor.pepi_cam01_problem"]["state"] == "off"
    assert states["sensor.pepi_cam01_captures_held"]["state"] == "0"
    classes = {
        "sensor.pepi_cam01_last_capture": "timestamp",
        "sensor.pepi_cam01_store_free": "data_size",
        "binary_sensor.pepi_cam01_problem": "problem",
    }
    for entity, device_class in classes.items():
        assert states[entity]["attributes"].get("device_class") == device_class, entity
    assert states["sensor.pepi_cam01_store_free"]["attributes"]["friendly_name"] == (
        "pepi cam01 Store free"
    )
    ha.wait_states(
        lambda s: s["sensor.pepi_controller_nodes_online"]["state"] == "2", 30, "2 nodes online"
    )
    assert states["sensor.pepi_controller_nodes_unreachable"]["state"] == "0"
    assert states["switch.pepi_controller_adaptive_delay"]["state"] == "off"
    # no node measured yet: the default lead, 1 s (pepi capture --delay auto)
    assert states["sensor.pepi_controller_trigger_lead"]["state"] == "1000"

    # A node's own button: an empty payload, so the node names the capture auto-<ms>.
    pressed = time.time()
    ha.press("button.pepi_cam01_capture")
    seen = watcher.wait_for(
        lambda m: m.topic == f"{ROOT}/nodes/cam01/result" and m.at >= pressed, 30, "a result"
    )
    result = CaptureResult.model_validate_json(seen.payload)
    assert result.status is CaptureStatus.OK and (result.capture_id or "").startswith("auto-")

    # The controller's Capture all: one set of both nodes, announced as an HA event.
    ha.press("button.pepi_controller_capture_all")
    states = ha.wait_states(
        lambda s: (
            s["event.pepi_controller_capture_set"]["attributes"].get("event_type") == "complete"
            and len(s["event.pepi_controller_capture_set"]["attributes"]["expected"]) == 2
        ),
        60,
        "a complete capture-set event",
    )
    event = states["event.pepi_controller_capture_set"]["attributes"]
    assert sorted(event["expected"]) == list(NODES)
    ha.wait_states(
        lambda s: (
            s["sensor.pepi_cam01_captures_held"]["state"] not in ("unavailable", "0")
            or s["sensor.pepi_controller_last_set_status"]["state"] == "complete"
        ),
        30,
        "the last set's status",
    )


def test_home_assistant_devices_come_back_after_its_birth_and_go_when_forgotten(
    rig: dict[str, Any],
) -> None:
    ha, watcher = _connected(rig)
    ha.wait_states(lambda s: _available(s, "button.pepi_cam02_capture"), 90, "cam02's button")

    # Remove cam01's discovery by hand, then restart Home Assistant: only its birth message
    # (not retained) can bring cam01 back, through the node announcing itself again.
    watcher.publish("homeassistant/device/cam01/config", b"", retain=True)
    ha.wait_states(lambda s: "button.pepi_cam01_capture" not in s, 30, "cam01 removed")
    ha.stop()
    restarted = time.time()
    ha.start()
    watcher.wait_for(
        lambda m: (
            m.topic == "homeassistant/device/cam01/config" and m.at >= restarted and bool(m.payload)
        ),
        60,
        "cam01 re-announced after Home Assistant's birth",
    )
    ha.wait_states(lambda s: _available(s, "button.pepi_cam01_capture"), 60, "cam01 back")

    # A node that stops: its entities turn unavailable within seconds (its availability).
    stopped = time.monotonic()
    rig["nodes"]["cam02"].stop()
    ha.wait_states(
        lambda s: (
            s["button.pepi_cam02_capture"]["state"] == "unavailable"
            and s["sensor.pepi_cam02_health"]["state"] == "unavailable"
        ),
        10,
        "cam02's entities unavailable",
    )
    assert time.monotonic() - stopped < 10

    # The operator forgets cam02 (stopped above): its device leaves Home Assistant.
    ctl = rig["ctl"]
    out = subprocess.run(
        [*PEPI, "controller", "--broker", ctl.broker_url, "--topic-root", ROOT,
         "--username", ctl.creds.username, "forget", "cam02"],
        env=pepi_env(ctl.creds), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and "cam02" in out.stdout + out.stderr, out.stderr
    ha.wait_states(lambda s: "button.pepi_cam02_capture" not in s, 30, "cam02 forgotten")


def test_home_assistant_adaptive_delay_switch_drives_the_scheduled_capture(
    rig: dict[str, Any],
) -> None:
    ha, watcher = _connected(rig)
    switch = "switch.pepi_controller_adaptive_delay"
    scheduled = "button.pepi_controller_capture_all_scheduled_aligned"
    ha.wait_states(lambda s: _available(s, switch, scheduled), 90, "the controller's entities")
    ha.post("/api/services/number/set_value",
            {"entity_id": "number.pepi_controller_schedule_delay", "value": 30})  # fmt: skip

    def state_says(adaptive: bool, after: float) -> None:
        watcher.wait_for(
            lambda m: (
                m.topic == f"{ROOT}/controller/state"
                and m.at >= after
                and ControllerState.model_validate_json(m.payload).adaptive_delay is adaptive
                and ControllerState.model_validate_json(m.payload).schedule_delay_s == 30
            ),
            30,
            f"the controller's retained state with adaptive_delay {adaptive}",
        )

    def press_scheduled() -> tuple[float, CaptureCommand]:
        pressed = time.time()
        ha.press(scheduled)
        seen = watcher.wait_for(
            lambda m: m.topic == f"{ROOT}/capture" and m.at >= pressed, 30, "the trigger"
        )
        return pressed, CaptureCommand.model_validate_json(seen.payload)

    # On: the controller confirms on its retained state, which is what the switch shows.
    turned = time.time()
    ha.post("/api/services/switch/turn_on", {"entity_id": switch})
    state_says(True, turned)
    ha.wait_states(lambda s: s[switch]["state"] == "on", 30, "the switch on")
    pressed, trigger = press_scheduled()
    assert trigger.at is not None and trigger.at - pressed < CEILING_S  # the lead, not 30 s

    # Off: the fixed delay again.
    turned = time.time()
    ha.post("/api/services/switch/turn_off", {"entity_id": switch})
    state_says(False, turned)
    ha.wait_states(lambda s: s[switch]["state"] == "off", 30, "the switch off")
    pressed, trigger = press_scheduled()
    assert trigger.at is not None and trigger.at - pressed >= 30
