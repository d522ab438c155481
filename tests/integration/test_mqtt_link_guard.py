"""The MQTT link keeps paho's network thread alive whatever our message handler raises."""

from __future__ import annotations

import threading
import uuid

import pytest
from support.mqtt_watch import Watcher

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink


@pytest.mark.parametrize("error", [RecursionError, OverflowError, KeyError])
def test_mqtt_link_handler_exception_drops_one_message_not_the_link(
    broker: EmbeddedBroker, root: str, watcher: Watcher, error: type[Exception]
) -> None:
    topic = f"{root}/capture"
    seen: list[bytes] = []
    after = threading.Event()
    subscribed = threading.Event()

    def on_message(msg: InboundMessage) -> None:
        seen.append(msg.payload)
        if msg.payload == b"probe":
            subscribed.set()
        if msg.payload == b"boom":
            raise error("raised by the handler")
        if msg.payload == b"after":
            after.set()

    link = MqttLink(
        BrokerAddress.parse(broker.url),
        LinkOptions(client_id=f"guard-{uuid.uuid4().hex[:8]}", subscriptions=((topic, 1),)),
        on_message=on_message,
    )
    link.start()
    try:
        assert link.wait_connected(10)
        for _ in range(50):  # until the subscription is in place (the link has no SUBACK hook)
            watcher.publish(topic, b"probe")
            if subscribed.wait(0.2):
                break
        watcher.publish(topic, b"boom")
        watcher.publish(topic, b"after")
        assert after.wait(10), f"nothing after the exception; got {seen}"
        assert seen[-2:] == [b"boom", b"after"]
        assert link.loop_alive()
    finally:
        link.stop()
    assert not link.loop_alive()
