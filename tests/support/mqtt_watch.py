"""A test-side MQTT client that records messages and waits for the one you expect."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pepi_fleet.core.mqtt_link import expiry_properties


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Watcher:
    """Subscribes to filters and records every message; ``wait_for`` blocks on a predicate."""

    def __init__(
        self,
        port: int,
        filters: list[str],
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[Seen] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._filters = filters
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("watcher could not subscribe")

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Seen(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[Seen], bool], timeout: float = 15.0, what: str = "message"
    ) -> Seen:
        """The first recorded message (past or future) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self.messages:
                    if predicate(seen):
                        return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise TimeoutError(f"no {what} within {timeout} s; saw topics {topics}")
                self._cond.wait(remaining)

    def wait_topic(
        self, topic: str, payload: bytes | None = None, timeout: float = 15.0, after: float = 0.0
    ) -> Seen:
        return self.wait_for(
            lambda s: (
                s.topic == topic and s.at >= after and (payload is None or s.payload == payload)
            ),
            timeout,
            what=f"{topic} {payload!r}",
        )

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> mqtt.MQTTMessageInfo:
        props = expiry_properties(expiry_s)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(5)
        return info

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
