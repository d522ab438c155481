"""A paho client whose every answer (CONNACK, PUBACK, SUBACK, messages, disconnect) a test
can wait on."""

from __future__ import annotations

import queue
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

TIMEOUT = 10.0


@dataclass
class Probe:
    """One MQTT v5 connection."""

    client: mqtt.Client
    connack: queue.Queue[int] = field(default_factory=queue.Queue)
    acks: queue.Queue[tuple[int, list[int]]] = field(default_factory=queue.Queue)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def connect_code(self) -> int:
        """The CONNACK reason code (0 = accepted)."""
        return self.connack.get(timeout=TIMEOUT)

    def publish_code(self, topic: str, payload: bytes = b"x") -> int:
        """PUBACK reason code of a QoS 1 publish (0/16 accepted, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        return self._ack(info.mid)[0]

    def subscribe_codes(self, topic: str) -> list[int]:
        """SUBACK reason codes (0-2 granted QoS, 135 not authorized)."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return self._ack(mid)

    def _ack(self, mid: int) -> list[int]:
        while True:
            got, codes = self.acks.get(timeout=TIMEOUT)
            if got == mid:
                return codes

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_probe(
    host: str,
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
) -> Probe:
    """Connect (TLS when ``ca_file`` is given) and run paho's loop; returns at once:
    ``connect_code()`` waits for the CONNACK. A refused client does not retry."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    probe = Probe(client)
    if username is not None:
        client.username_pw_set(username, password)
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        probe.connack.put(int(rc.value))  # type: ignore[attr-defined]
        if rc.is_failure:  # type: ignore[attr-defined]
            c.disconnect()  # no reconnect loop for a refused login

    def on_publish(_c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        probe.acks.put((mid, [int(rc.value)]))  # type: ignore[attr-defined]

    def on_subscribe(_c: object, _u: object, mid: int, codes: list[object], _p: object) -> None:
        probe.acks.put((mid, [int(code.value) for code in codes]))  # type: ignore[attr-defined]

    def on_disconnect(*_args: object) -> None:
        probe.disconnected.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = lambda _c, _u, msg: probe.messages.put(msg)
    client.on_disconnect = on_disconnect
    client.connect(host, port)
    client.loop_start()
    return probe
