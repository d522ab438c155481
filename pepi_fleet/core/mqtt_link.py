"""A small paho-mqtt 2.x wrapper (MQTT 5): will, subscribe-on-connect, hand-off callbacks."""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pepi_fleet.core.availability import OFFLINE
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)


class BrokerUrlError(PepiError):
    """The --broker URL cannot be used."""


@dataclass(frozen=True)
class BrokerAddress:
    """Parsed ``mqtt://[user:pass@]host[:port]`` or ``mqtts://…``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; a bare ``host[:port]`` means ``mqtt://``."""
        if "://" not in url:
            url = "mqtt://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise BrokerUrlError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL {url!r}: bad port") from exc
        if port == 0:
            raise BrokerUrlError(f"broker URL {url!r}: port 0 is not a broker port")
        port = port or (8883 if tls else 1883)
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {url!r}: no host")
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
        )


@dataclass(frozen=True)
class InboundMessage:
    """A received message, stamped on arrival."""

    topic: str
    payload: bytes
    retain: bool
    received_at: float
    expiry_interval: float | None = None
    """MQTT 5 message expiry remaining when the broker delivered it (s)."""

    @property
    def expires_at(self) -> float | None:
        if self.expiry_interval is None:
            return None
        return self.received_at + self.expiry_interval


@dataclass(frozen=True)
class LinkOptions:
    """Who we are and what we leave behind."""

    client_id: str
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None
    will_payload: bytes = OFFLINE
    keepalive: int = 15
    subscriptions: tuple[tuple[str, int], ...] = ()
    ca_file: str | None = None


class LogThrottle:
    """Lets the first event of a run through, then at most one per ``interval_s``."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def allow(self) -> int | None:
        """None: stay quiet. Otherwise log, noting this many events held back since the last."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held

    def reset(self) -> None:
        """The run is over (e.g. connected): the next event is let through at once."""
        self._last = None
        self._held = 0


CONNECT_FAIL_LOG_INTERVAL_S = 60.0


class MqttLink:
    """Owns one paho client. Callbacks run on paho's thread and must only hand off."""

    def __init__(
        self,
        address: BrokerAddress,
        options: LinkOptions,
        on_message: Callable[[InboundMessage], None],
        on_connected: Callable[[], None] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
    ) -> None:
        self.address = address
        self.options = options
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.connected = threading.Event()
        self.last_error: str | None = None
        self._connect_fail_log = LogThrottle(CONNECT_FAIL_LOG_INTERVAL_S)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        username = options.username or address.username
        password = options.password or address.password
        if username:
            client.username_pw_set(username, password)
        if address.tls:
            client.tls_set(ca_certs=options.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if options.will_topic:
            client.will_set(options.will_topic, options.will_payload, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(1000)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self._client = client

    def start(self) -> None:
        """Connect in the background; paho retries the first connect and every reconnect."""
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.options.keepalive,
            clean_start=True,
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Queue a publish (never blocks; safe from any thread, including callbacks)."""
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = expiry_s
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 3.0) -> None:
        """Publish ``final`` (e.g. retained ``offline``) if connected, then disconnect cleanly."""
        if final is not None and self.connected.is_set():
            info = self.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                logger.warning("could not publish %s before stopping: %s", final[0], exc)
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            logger.error("%s (check username/password and the ACL)", self.last_error)
            return
        self.last_error = None
        self._connect_fail_log.reset()
        for topic, qos in self.options.subscriptions:
            client.subscribe(topic, qos=qos)
        self.connected.set()
        logger.info(
            "connected to %s:%d as %s", self.address.host, self.address.port, self.options.client_id
        )
        if self._on_connected is not None:
            self._on_connected()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this from inside its ``except OSError`` around the TCP/TLS connect and does
        # not pass the exception; it is the one being handled.
        exc = sys.exc_info()[1]
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc or "no answer")
        where = f"{self.address.host}:{self.address.port}"
        self.last_error = f"cannot reach the MQTT broker at {where} ({reason})"
        held = self._connect_fail_log.allow()
        if held is None:
            return
        logger.warning(
            "%s; retrying%s (is the broker running? check --broker)",
            self.last_error,
            f", {held} more failed attempts since the last report" if held else "",
        )

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        reason = str(reason_code)
        if reason_code.is_failure:
            logger.warning("disconnected from broker (%s); reconnecting", reason)
        if self._on_disconnected is not None:
            self._on_disconnected(reason)

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received_at = time.time()
        expiry = None
        props = getattr(msg, "properties", None)
        if props is not None and hasattr(props, "MessageExpiryInterval"):
            expiry = float(props.MessageExpiryInterval)
        self._on_message(
            InboundMessage(
                topic=msg.topic,
                payload=bytes(msg.payload),
                retain=bool(msg.retain),
                received_at=received_at,
                expiry_interval=expiry,
            )
        )
