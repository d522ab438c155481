"""Session takeover detection in the MQTT link: the 0x8E reason, and mosquitto 2.0's silence."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.client import DisconnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from pepi_fleet.core.mqtt_link import BrokerAddress, LinkOptions, MqttLink


def _link() -> MqttLink:
    return MqttLink(
        BrokerAddress.parse("mqtt://127.0.0.1:1"),
        LinkOptions(client_id="cam7", role="node"),
        on_message=lambda msg: None,
    )


def _drop(link: MqttLink, reason: str, from_server: bool, lasted: float) -> None:
    link._connected_at = time.monotonic() - lasted
    link._handle_disconnect(
        link._client,
        None,
        DisconnectFlags(is_disconnect_packet_from_server=from_server),
        ReasonCode(PacketTypes.DISCONNECT, reason),
        None,
    )


def test_link_session_taken_over_is_named_at_once(caplog: pytest.LogCaptureFixture) -> None:
    link = _link()
    _drop(link, "Session taken over", True, 100.0)
    assert link.takeovers == 1
    assert "another client is using node id cam7" in caplog.text
    assert link.takeover_warning() == "another client is using node id cam7"


def test_link_repeated_silent_closes_soon_after_connecting_are_a_takeover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = _link()
    _drop(link, "Unspecified error", False, 600.0)  # a long connection ends: a broker restart?
    _drop(link, "Unspecified error", False, 1.0)
    assert link.takeovers == 1
    assert "another client is using node id cam7" in caplog.text
    _drop(link, "Unspecified error", False, 4.0)
    assert link.takeovers == 2


@pytest.mark.parametrize(
    ("reason", "from_server"), [("Keep alive timeout", False), ("Server shutting down", True)]
)
def test_link_other_disconnects_are_not_takeovers(reason: str, from_server: bool) -> None:
    link = _link()
    for _ in range(3):
        _drop(link, reason, from_server, 1.0)
    assert link.takeovers == 0 and link.takeover_warning() is None
