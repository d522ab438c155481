"""The project's ACL on a real mosquitto: nodes write only their own subtree."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.controllers import automation_credentials

from pepi_fleet.broker.runner import EmbeddedBroker


def publish_reason(broker: EmbeddedBroker, username: str, password: str, topic: str) -> int:
    """PUBACK reason code for a QoS 1 publish (0/16 accepted, 135 not authorized)."""
    done = threading.Event()
    codes: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"acl-{username}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(username, password)

    def on_publish(_c: object, _u: object, _mid: int, reason: object, _p: object) -> None:
        codes.append(int(reason.value))  # type: ignore[attr-defined]
        done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, b"x", qos=1)
        assert done.wait(10), "no PUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


NOT_AUTHORIZED = 135


@pytest.fixture
def node_creds(broker: EmbeddedBroker) -> tuple[str, str]:
    creds = broker.add_user("aclnode")
    return creds.username, creds.password


def test_acl_node_may_write_its_own_status(
    broker: EmbeddedBroker, root: str, node_creds: tuple[str, str]
) -> None:
    code = publish_reason(broker, *node_creds, f"{root}/nodes/aclnode/status")
    assert code != NOT_AUTHORIZED


@pytest.mark.parametrize(
    "leaf",
    [
        "nodes/othernode/status",
        "nodes/othernode/availability",
        "capture",
        "nodes/othernode/capture",
        "controller/captures",
    ],
)
def test_acl_node_cannot_write_elsewhere(
    broker: EmbeddedBroker, root: str, node_creds: tuple[str, str], leaf: str
) -> None:
    assert publish_reason(broker, *node_creds, f"{root}/{leaf}") == NOT_AUTHORIZED


def test_acl_wrong_password_is_refused(broker: EmbeddedBroker, node_creds: tuple[str, str]) -> None:
    refused = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="acl-bad", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(node_creds[0], "wrong")
    client.on_connect = lambda c, u, f, rc, p: refused.set() if rc.is_failure else None
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert refused.wait(10)
    finally:
        client.loop_stop()


@pytest.fixture
def automation_creds(broker: EmbeddedBroker) -> tuple[str, str]:
    creds = automation_credentials(broker)
    return creds.username, creds.password


def test_acl_automation_may_send_controller_commands(
    broker: EmbeddedBroker, root: str, automation_creds: tuple[str, str]
) -> None:
    """Home Assistant's controller buttons, number and switch publish there."""
    code = publish_reason(broker, *automation_creds, f"{root}/controller/command")
    assert code != NOT_AUTHORIZED


@pytest.mark.parametrize(
    "leaf", ["controller/state", "controller/availability", "controller/captures"]
)
def test_acl_automation_cannot_speak_for_the_controller(
    broker: EmbeddedBroker, root: str, automation_creds: tuple[str, str], leaf: str
) -> None:
    assert publish_reason(broker, *automation_creds, f"{root}/{leaf}") == NOT_AUTHORIZED
