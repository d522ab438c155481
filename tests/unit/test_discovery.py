"""Home Assistant device-based discovery payloads: shape, ids, topics, sizes."""

from __future__ import annotations

import json

import pytest

from pepi_fleet.controller.home_assistant import ControllerCommand
from pepi_fleet.schemas.discovery import (
    DeviceDiscovery,
    controller_discovery,
    controller_object_id,
    node_discovery,
)
from pepi_fleet.schemas.topics import Topics

TOPICS = Topics("pepi/v1")


def _check_components(payload: DeviceDiscovery) -> dict[str, object]:
    data = json.loads(payload.model_dump_json(exclude_none=True))
    assert {"dev", "o", "cmps", "availability"} <= data.keys()
    assert data["dev"]["identifiers"] and data["o"]["name"]
    unique = [c["unique_id"] for c in data["cmps"].values()]
    assert len(unique) == len(set(unique))
    for key, component in data["cmps"].items():
        assert component["p"], key
        assert "object_id" not in component, "object_id stopped working in HA 2026.4"
        platform, _, rest = component["default_entity_id"].partition(".")
        assert platform == component["p"] and rest, key
    return data


def test_discovery_node_device_has_every_entity_and_points_at_its_topics() -> None:
    data = _check_components(node_discovery(TOPICS, "cam07", "1.2.3", "imx477", 2))
    cmps = data["cmps"]
    assert isinstance(cmps, dict)
    assert cmps["capture"]["command_topic"] == "pepi/v1/nodes/cam07/capture"
    assert cmps["capture"]["payload_press"] == ""  # auto ids, never PRESS
    assert cmps["last_capture_image"]["image_topic"] == "pepi/v1/nodes/cam07/preview"
    assert cmps["preview"]["topic"] == "pepi/v1/nodes/cam07/live"
    assert cmps["last_capture"]["device_class"] == "timestamp"
    assert cmps["clock_offset"]["entity_category"] == "diagnostic"
    assert cmps["problem"]["device_class"] == "problem"
    assert cmps["last_capture"]["default_entity_id"] == "sensor.pepi_cam07_last_capture"
    assert data["availability"] == [{"topic": "pepi/v1/nodes/cam07/availability"}]
    assert data["dev"]["via_device"] == controller_object_id(TOPICS)  # type: ignore[index]


def test_discovery_controller_device_has_buttons_sensors_event_number_and_switch() -> None:
    data = _check_components(controller_discovery(TOPICS, "1.2.3", "http://rig:8080/"))
    cmps = data["cmps"]
    assert isinstance(cmps, dict)
    platforms = sorted({c["p"] for c in cmps.values()})
    assert platforms == ["button", "event", "number", "sensor", "switch"]
    assert cmps["capture_all"]["command_topic"] == "pepi/v1/capture"
    assert cmps["capture_set"]["event_types"] == ["complete", "incomplete"]
    assert cmps["schedule_delay"]["entity_category"] == "config"
    adaptive = cmps["adaptive_delay"]
    assert adaptive["entity_category"] == "config" and adaptive["name"] == "Adaptive delay"
    assert ControllerCommand.model_validate_json(adaptive["payload_on"]).enabled is True
    lock = cmps["lock_exposure"]
    assert lock["command_topic"] == "pepi/v1/controller/command"
    assert ControllerCommand.model_validate_json(lock["payload_press"]).action == "lock_exposure"


@pytest.mark.parametrize("root", ["pepi/v1", "site-b/rig2"])
def test_discovery_topic_and_object_ids_are_valid_for_home_assistant(root: str) -> None:
    topics = Topics(root)
    for object_id in (controller_object_id(topics), "cam07"):
        assert all(c.isalnum() or c in "_-" for c in object_id)
        assert topics.discovery(object_id).startswith("homeassistant/device/")
    size = len(node_discovery(topics, "cam07", "1", "synthetic", 1).model_dump_json())
    assert size < 16_000  # far under any broker's packet limit
