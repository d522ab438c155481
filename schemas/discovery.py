"""Home Assistant MQTT device-based discovery (HA 2024.11+): one retained payload per device.

Nodes announce themselves (so a node appears even with no controller), the controller
announces itself; both re-announce when Home Assistant's birth message arrives (it is not
retained). An empty retained payload on the same topic removes the device.
Entity ids are set with ``default_entity_id`` (``object_id`` stops working in HA 2026.4).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pepi_fleet.schemas.topics import Topics

MANUFACTURER = "pepi-fleet"
ORIGIN_URL = "https://github.com/pepi-fleet/pepi-fleet"
HA_STATUS_TOPIC_LEAF = "status"
"""``<prefix>/status``: Home Assistant's birth (``online``) and will (``offline``)."""


class Device(BaseModel):
    """The ``dev`` block: what the device registry shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identifiers: list[str]
    name: str
    manufacturer: str = MANUFACTURER
    model: str
    sw_version: str
    serial_number: str | None = None
    via_device: str | None = None
    configuration_url: str | None = None


class Origin(BaseModel):
    """The ``o`` block: who published the discovery."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "pepi-fleet"
    sw: str
    url: str = ORIGIN_URL


class DeviceDiscovery(BaseModel):
    """``<prefix>/device/<object_id>/config``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dev: Device
    o: Origin
    availability: list[dict[str, str]]
    qos: int = 1
    cmps: dict[str, dict[str, Any]] = Field(description="components by id; each has p, unique_id")


def ha_status_topic(topics: Topics) -> str:
    """Where Home Assistant publishes its birth message."""
    return f"{topics.discovery_prefix}/{HA_STATUS_TOPIC_LEAF}"


def controller_object_id(topics: Topics) -> str:
    """The controller's discovery object id (one controller per topic root)."""
    return "pepi_controller_" + _slug(topics.root)


def node_object_id(node_id: str) -> str:
    """A node's discovery object id: its node id (the ACL lets it write only that topic)."""
    return node_id


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _entity(platform: str, node: str) -> str:
    return f"{platform}.pepi_{_slug(node)}"


def node_discovery(
    topics: Topics, node_id: str, version: str, model: str, cameras: int
) -> DeviceDiscovery:
    """A node as a device: capture button, last capture image, live preview camera, sensors."""
    slug = _slug(node_id)
    status = topics.status(node_id)
    uid = f"pepi_{slug}"

    def status_sensor(key: str, name: str, template: str, **more: Any) -> dict[str, Any]:
        return {
            "p": "sensor",
            "unique_id": f"{uid}_{key}",
            "default_entity_id": f"{_entity('sensor', node_id)}_{key}",
            "name": name,
            "state_topic": status,
            "value_template": template,
            **more,
        }

    cmps: dict[str, dict[str, Any]] = {
        "capture": {
            "p": "button",
            "unique_id": f"{uid}_capture",
            "default_entity_id": f"{_entity('button', node_id)}_capture",
            "name": "Capture",
            "command_topic": topics.node_capture(node_id),
            "payload_press": "",  # empty: the node names the capture auto-<UTC ms>
            "icon": "mdi:camera",
        },
        "last_capture_image": {
            "p": "image",
            "unique_id": f"{uid}_last_capture_image",
            "default_entity_id": f"{_entity('image', node_id)}_last_image",
            "name": "Last image",
            "image_topic": topics.preview(node_id),
            "content_type": "image/jpeg",
        },
        "preview": {
            "p": "camera",
            "unique_id": f"{uid}_preview",
            "default_entity_id": f"{_entity('camera', node_id)}_preview",
            "name": "Preview",
            "topic": topics.live_preview(node_id),
        },
        "last_capture": status_sensor(
            "last_capture",
            "Last capture",
            "{% set ISO_UTC = '%Y-%m-%dT%H:%M:%S.%f+00:00' %}{% if value_json.last_capture_at %}"
            "{{ value_json.last_capture_at | timestamp_custom(ISO_UTC, false) }}"
            "{% else %}None{% endif %}",
            device_class="timestamp",
        ),
        "captures_held": status_sensor(
            "captures_held",
            "Captures held",
            "{{ value_json.store.captures }}",
            state_class="measurement",
            icon="mdi:image-multiple",
        ),
        "store_free": status_sensor(
            "store_free",
            "Store free",
            "{{ value_json.store.free_bytes }}",
            device_class="data_size",
            unit_of_measurement="B",
            suggested_unit_of_measurement="GB",
            state_class="measurement",
        ),
        "clock_offset": status_sensor(
            "clock_offset",
            "Clock offset",
            "{% if value_json.clock.offset_estimate_s is not none %}"
            "{{ (value_json.clock.offset_estimate_s * 1000) | round(3) }}"
            "{% else %}None{% endif %}",
            unit_of_measurement="ms",
            state_class="measurement",
            entity_category="diagnostic",
        ),
        "health": status_sensor(
            "health",
            "Health",
            "{{ value_json.health | default('ok') }}",
            entity_category="diagnostic",
            icon="mdi:heart-pulse",
        ),
        "clock_synced": {
            "p": "binary_sensor",
            "unique_id": f"{uid}_clock_synced",
            "default_entity_id": f"{_entity('binary_sensor', node_id)}_clock_synced",
            "name": "Clock synchronised",
            "state_topic": status,
            "value_template": "{{ 'ON' if value_json.clock.synced else 'OFF' }}",
            "entity_category": "diagnostic",
        },
        "problem": {
            "p": "binary_sensor",
            "unique_id": f"{uid}_problem",
            "default_entity_id": f"{_entity('binary_sensor', node_id)}_problem",
            "name": "Problem",
            "device_class": "problem",
            "state_topic": status,
            "value_template": "{{ 'OFF' if (value_json.health | default('ok')) == 'ok'"
            " else 'ON' }}",
        },
    }
    return DeviceDiscovery(
        dev=Device(
            identifiers=[uid],
            name=f"pepi {node_id}",
            model=f"{model} x{cameras}" if cameras > 1 else model,
            sw_version=version,
            serial_number=node_id,
            via_device=controller_object_id(topics),
        ),
        o=Origin(sw=version),
        availability=[{"topic": topics.availability(node_id)}],
        cmps=cmps,
    )


def controller_discovery(topics: Topics, version: str, url: str | None) -> DeviceDiscovery:
    """The controller as a device: capture buttons, the schedule delay (fixed or adaptive),
    fleet and last-set sensors, set events."""
    oid = controller_object_id(topics)
    state = topics.controller_state()

    def sensor(key: str, name: str, template: str, **more: Any) -> dict[str, Any]:
        return {
            "p": "sensor",
            "unique_id": f"{oid}_{key}",
            "default_entity_id": f"sensor.{oid}_{key}",
            "name": name,
            "state_topic": state,
            "value_template": template,
            **more,
        }

    event_template = (
        "{{ dict(value_json, event_type=('complete' if value_json.complete else 'incomplete'))"
        " | tojson }}"
    )
    cmps: dict[str, dict[str, Any]] = {
        "capture_all": {
            "p": "button",
            "unique_id": f"{oid}_capture_all",
            "default_entity_id": f"button.{oid}_capture_all",
            "name": "Capture all",
            "command_topic": topics.capture(),
            "payload_press": "",
            "icon": "mdi:camera-burst",
        },
        "capture_scheduled": {
            "p": "button",
            "unique_id": f"{oid}_capture_scheduled",
            "default_entity_id": f"button.{oid}_capture_scheduled",
            "name": "Capture all (scheduled, aligned)",
            "command_topic": topics.controller_command(),
            "payload_press": '{"action": "capture_scheduled"}',
            "icon": "mdi:camera-timer",
        },
        "lock_exposure": {
            "p": "button",
            "unique_id": f"{oid}_lock_exposure",
            "default_entity_id": f"button.{oid}_lock_exposure",
            "name": "Lock exposure",
            "command_topic": topics.controller_command(),
            "payload_press": '{"action": "lock_exposure"}',
            "icon": "mdi:camera-iris",
            "entity_category": "config",
        },
        "schedule_delay": {
            "p": "number",
            "unique_id": f"{oid}_schedule_delay",
            "default_entity_id": f"number.{oid}_schedule_delay",
            "name": "Schedule delay",
            "command_topic": topics.controller_command(),
            "command_template": '{"action": "set_schedule_delay", "value": {{ value }}}',
            "state_topic": state,
            "value_template": "{{ value_json.schedule_delay_s }}",
            "min": 0.1,
            "max": 60,
            "step": 0.1,
            "unit_of_measurement": "s",
            "mode": "box",
            "entity_category": "config",
        },
        "adaptive_delay": {
            "p": "switch",
            "unique_id": f"{oid}_adaptive_delay",
            "default_entity_id": f"switch.{oid}_adaptive_delay",
            "name": "Adaptive delay",
            "command_topic": topics.controller_command(),
            "payload_on": '{"action": "set_adaptive_delay", "enabled": true}',
            "payload_off": '{"action": "set_adaptive_delay", "enabled": false}',
            "state_topic": state,
            # a state from a controller without the switch reads as off
            "value_template": "{{ 'ON' if value_json.adaptive_delay | default(false) else 'OFF' }}",
            "state_on": "ON",
            "state_off": "OFF",
            "icon": "mdi:timer-cog-outline",
            "entity_category": "config",
        },
        "nodes_online": sensor(
            "nodes_online",
            "Nodes online",
            "{{ value_json.nodes_online }}",
            state_class="measurement",
        ),
        "nodes_stale": sensor(
            "nodes_stale", "Nodes stale", "{{ value_json.nodes_stale }}", state_class="measurement"
        ),
        "nodes_offline": sensor(
            "nodes_offline",
            "Nodes offline",
            "{{ value_json.nodes_offline }}",
            state_class="measurement",
        ),
        "nodes_unreachable": sensor(
            "nodes_unreachable",
            "Nodes unreachable",
            "{{ value_json.nodes_unreachable | default(0) }}",
            state_class="measurement",
        ),
        "last_set": sensor("last_set", "Last capture set", "{{ value_json.last_set_id }}"),
        "last_set_status": sensor(
            "last_set_status", "Last set status", "{{ value_json.last_set_status }}"
        ),
        "last_set_spread": sensor(
            "last_set_spread",
            "Last set spread",
            "{% if value_json.last_set_spread_s is not none %}"
            "{{ (value_json.last_set_spread_s * 1000) | round(3) }}{% else %}None{% endif %}",
            unit_of_measurement="ms",
            state_class="measurement",
        ),
        "trigger_lead": sensor(
            "trigger_lead",
            "Trigger lead",
            "{% if value_json.trigger_lead_s is defined"
            " and value_json.trigger_lead_s is not none %}"
            "{{ (value_json.trigger_lead_s * 1000) | round(0) | int }}{% else %}None{% endif %}",
            unit_of_measurement="ms",
            state_class="measurement",
            entity_category="diagnostic",
        ),
        "last_set_images": sensor(
            "last_set_images",
            "Last set images",
            "{{ value_json.last_set_images_done }}/{{ value_json.last_set_images_expected }}",
        ),
        "capture_set": {
            "p": "event",
            "unique_id": f"{oid}_capture_set",
            "default_entity_id": f"event.{oid}_capture_set",
            "name": "Capture set",
            "state_topic": topics.controller_captures(),
            "event_types": ["complete", "incomplete"],
            "value_template": event_template,
        },
    }
    return DeviceDiscovery(
        dev=Device(
            identifiers=[oid],
            name="pepi controller"
            if topics.root == "pepi/v1"
            else f"pepi controller {topics.root}",
            model="pepi-fleet controller",
            sw_version=version,
            configuration_url=url,
        ),
        o=Origin(sw=version),
        availability=[{"topic": topics.controller_availability()}],
        cmps=cmps,
    )
