"""The controller's Home Assistant commands: the schedule delay, fixed or adaptive, and the
retained state that shows which one the scheduled capture uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pepi_fleet.controller.home_assistant import (
    CHOICES_FILE,
    ControllerCommand,
    ControllerState,
    HomeAssistantBridge,
    ScheduledCapture,
)
from pepi_fleet.schemas.discovery import controller_discovery
from pepi_fleet.schemas.topics import Topics

TOPICS = Topics("pepi/v1")
SWITCH = controller_discovery(TOPICS, "1.0", None).cmps["adaptive_delay"]


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | str, bool]] = []

    def __call__(self, topic: str, payload: bytes | str, retain: bool) -> None:
        self.messages.append((topic, payload, retain))

    def states(self) -> list[ControllerState]:
        return [
            ControllerState.model_validate_json(payload)
            for topic, payload, retain in self.messages
            if topic == TOPICS.controller_state() and retain
        ]


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def bridge(published: Published) -> HomeAssistantBridge:
    bridge = HomeAssistantBridge(TOPICS, published, "1.0", None, lambda: 100.0)
    bridge.on_connected()
    return bridge


def command(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_ha_commands_capture_uses_the_fixed_delay_until_adaptive_is_switched_on(
    bridge: HomeAssistantBridge, published: Published
) -> None:
    assert published.states()[-1].adaptive_delay is False  # off unless an operator asks
    bridge.on_command(command(action="set_schedule_delay", value=4.5))
    assert bridge.on_command(command(action="capture_scheduled")) == ScheduledCapture(4.5)

    assert bridge.on_command(SWITCH["payload_on"].encode()) is None
    state = published.states()[-1]
    assert state.adaptive_delay is True and state.schedule_delay_s == 4.5
    assert bridge.on_command(command(action="capture_scheduled")) == ScheduledCapture(None)

    bridge.on_command(SWITCH["payload_off"].encode())
    assert published.states()[-1].adaptive_delay is False
    assert bridge.on_command(command(action="capture_scheduled")) == ScheduledCapture(4.5)


def test_ha_commands_switch_state_is_retained_at_once_and_republished_on_reconnect(
    bridge: HomeAssistantBridge, published: Published
) -> None:
    before = len(published.messages)
    bridge.on_command(SWITCH["payload_on"].encode())
    # published at once, not after the state's rate limit: HA's switch waits for it
    assert len(published.messages) == before + 1
    published.messages.clear()
    bridge.on_connected()  # a new broker session: the retained state goes out again
    assert published.states()[-1].adaptive_delay is True


@pytest.mark.parametrize(
    "payload",
    [
        b'{"action": "set_adaptive_delay"}',
        b'{"action": "set_adaptive_delay", "enabled": "maybe"}',
        b'{"action": "set_adaptive_delay", "enabled": true, "extra": 1}',
        b"ON",
    ],
    ids=["no-enabled", "not-a-bool", "unknown-field", "not-json"],
)
def test_ha_commands_bad_switch_command_is_ignored_and_changes_nothing(
    bridge: HomeAssistantBridge,
    published: Published,
    payload: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge.on_command(SWITCH["payload_on"].encode())
    assert bridge.on_command(payload) is None
    assert published.states()[-1].adaptive_delay is True
    assert bridge.on_command(command(action="capture_scheduled")) == ScheduledCapture(None)
    assert "ignored" in caplog.text


def test_ha_commands_switch_payloads_are_controller_commands() -> None:
    on = ControllerCommand.model_validate_json(SWITCH["payload_on"])
    off = ControllerCommand.model_validate_json(SWITCH["payload_off"])
    assert (on.action, on.enabled) == ("set_adaptive_delay", True)
    assert (off.action, off.enabled) == ("set_adaptive_delay", False)
    assert SWITCH["command_topic"] == TOPICS.controller_command()
    assert SWITCH["state_topic"] == TOPICS.controller_state()
    # the state compares against state_on/off, not the JSON commands
    assert (SWITCH["state_on"], SWITCH["state_off"]) == ("ON", "OFF")
    assert "value_json.adaptive_delay" in SWITCH["value_template"]


def test_ha_choices_are_kept_across_a_controller_restart(tmp_path: Path) -> None:
    kept = tmp_path / CHOICES_FILE
    first = HomeAssistantBridge(TOPICS, Published(), "1.0", None, lambda: 100.0, choices_file=kept)
    first.on_command(command(action="set_schedule_delay", value=7.25))
    first.on_command(command(action="set_adaptive_delay", enabled=True))

    published = Published()
    again = HomeAssistantBridge(TOPICS, published, "1.0", None, lambda: 200.0, choices_file=kept)
    again.on_connected()
    [state] = published.states()  # the first retained state already holds the kept choices
    assert (state.schedule_delay_s, state.adaptive_delay) == (7.25, True)
    assert again.on_command(command(action="capture_scheduled")) == ScheduledCapture(None)
    again.on_command(command(action="set_adaptive_delay", enabled=False))
    assert again.on_command(command(action="capture_scheduled")) == ScheduledCapture(7.25)


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"schedule_delay_s": 1e9}', b'{"adaptive_delay": "maybe"}']
)
def test_ha_choices_unreadable_start_from_the_defaults(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    kept = tmp_path / CHOICES_FILE
    kept.write_bytes(content)
    published = Published()
    bridge = HomeAssistantBridge(TOPICS, published, "1.0", None, lambda: 100.0, choices_file=kept)
    bridge.on_connected()
    assert published.states()[-1] == ControllerState()
    assert "ignoring" in caplog.text
    bridge.on_command(command(action="set_schedule_delay", value=2.0))  # and it is rewritten
    assert json.loads(kept.read_bytes())["schedule_delay_s"] == 2.0
