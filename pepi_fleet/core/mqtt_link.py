"""A small paho-mqtt 2.x wrapper (MQTT 5): will, subscribe-on-connect, hand-off callbacks.

Nothing raised by our callbacks reaches paho: its network thread would die of it.
"""

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
from paho.mqtt.subscribeoptions import SubscribeOptions

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
    retain_as_published: bool = False
    """Subscribe so that a live message keeps its publisher's retain flag (MQTT 5); without
    it the broker clears the flag on every message that is not a stored one."""
    role: str = "client"
    """What the client id names, in log lines (``another client is using node id x``)."""


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
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason: another connection with our client id replaced us."""
TAKEOVER_BACKOFF_S = 4.0
TAKEOVER_BACKOFF_MAX_S = 300.0
TAKEOVER_FORGET_S = 600.0
"""Connected this long without another takeover: the next one starts the back-off afresh."""
SHORT_CONNECTION_S = 10.0
"""A connection the broker closes sooner than this (or twice the current back-off) without
a DISCONNECT packet is suspect: mosquitto 2.0 ends a taken-over session just so."""
ABRUPT_CLOSES_FOR_TAKEOVER = 2
"""Suspect closes in a row taken as a session takeover (one alone may be a broker restart)."""


def expiry_properties(expiry_s: int | None) -> Properties | None:
    """PUBLISH properties carrying an MQTT 5 message expiry of ``expiry_s`` s; None without."""
    if expiry_s is None:
        return None
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = expiry_s
    return properties


def takeover_backoff_s(takeovers: int) -> float:
    """Wait before reconnecting after the ``takeovers``-th session takeover in a row."""
    doublings = max(0, min(takeovers, 32) - 1)
    return min(TAKEOVER_BACKOFF_S * float(2**doublings), TAKEOVER_BACKOFF_MAX_S)


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
        self.takeovers = 0
        """Session takeovers in a row (another client with our id); 0 when there are none."""
        self.last_takeover = 0.0
        """``time.monotonic()`` of the last takeover."""
        self._connect_fail_log = LogThrottle(CONNECT_FAIL_LOG_INTERVAL_S)
        self._loop_thread: threading.Thread | None = None
        self._connected_at: float | None = None
        self._abrupt_closes = 0
        # Publishes (QoS >= 1) not yet acknowledged, mid -> monotonic time; and acks that
        # arrived before ``publish`` could note the mid (paho's thread may be that quick).
        self._unacked: dict[int, float] = {}
        self._early_acks: dict[int, float] = {}
        self._acks_lock = threading.Lock()
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
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.max_queued_messages_set(1000)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
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
        # paho has no accessor for its network thread; keep it to tell whether it still runs.
        self._loop_thread = self._client._thread

    def loop_alive(self) -> bool:
        """True while paho's network thread runs (from ``start`` until ``stop``)."""
        thread = self._loop_thread
        return thread is not None and thread.is_alive()

    def unacked_s(self, now: float | None = None) -> float:
        """Age of the oldest QoS >= 1 publish the broker has not acknowledged while connected.

        Grows only when the network loop stops working through its queue (a dead link is
        noticed by the keepalive and ends the connection; reconnecting restarts the clock).
        """
        now = time.monotonic() if now is None else now
        with self._acks_lock:
            oldest = min(self._unacked.values(), default=now)
        return max(0.0, now - oldest) if self.connected.is_set() else 0.0

    def takeover_warning(self) -> str | None:
        """``another client is using <role> id <id>`` while that is recent news, else None."""
        if not self.takeovers or time.monotonic() - self.last_takeover > TAKEOVER_FORGET_S:
            return None
        return f"another client is using {self.options.role} id {self.options.client_id}"

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
        properties = expiry_properties(expiry_s)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos > 0 and info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._note_sent(info.mid)
        return info

    def _note_sent(self, mid: int) -> None:
        now = time.monotonic()
        with self._acks_lock:
            if self._early_acks.pop(mid, None) is None:
                self._unacked[mid] = now
            if len(self._unacked) > 4 * 65536:  # paho reuses mids; never grow without bound
                self._unacked.clear()

    def stop(
        self, final: tuple[str, bytes] | None = None, timeout: float = 3.0, will: bool = False
    ) -> None:
        """Publish ``final`` (e.g. retained ``offline``) if connected, then disconnect cleanly.

        ``will``: disconnect asking the broker to publish our Last Will all the same (MQTT 5
        reason 0x04), for a stop that is a failure the rest of the fleet must hear of.
        """
        if final is not None and self.connected.is_set():
            info = self.publish(final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                logger.warning("could not publish %s before stopping: %s", final[0], exc)
        reason = None
        if will:
            reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        self._client.disconnect(reasoncode=reason)
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
        try:
            self._connected(client, reason_code)
        except Exception:
            logger.exception("handling the broker's CONNACK failed")

    def _connected(self, client: mqtt.Client, reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            logger.error("%s (check username/password and the ACL)", self.last_error)
            return
        self.last_error = None
        self._connect_fail_log.reset()
        self._settle_takeovers()
        for topic, qos in self.options.subscriptions:
            if self.options.retain_as_published:
                client.subscribe(topic, options=SubscribeOptions(qos=qos, retainAsPublished=True))
            else:
                client.subscribe(topic, qos=qos)
        with self._acks_lock:  # paho sends again what was in flight: its clock restarts now
            now = time.monotonic()
            self._unacked = dict.fromkeys(self._unacked, now)
        self._connected_at = now
        self.connected.set()
        logger.info(
            "connected to %s:%d as %s", self.address.host, self.address.port, self.options.client_id
        )
        if self._on_connected is not None:
            self._on_connected()

    def _settle_takeovers(self) -> None:
        """Connected: normal reconnect delays again; a takeover long ago is forgotten."""
        if not self.takeovers:
            return
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        if time.monotonic() - self.last_takeover > TAKEOVER_FORGET_S:
            self.takeovers = 0

    def _handle_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        try:
            self._connect_failed(sys.exc_info()[1])
        except Exception:
            logger.exception("handling a failed connect failed")

    def _connect_failed(self, exc: BaseException | None) -> None:
        # paho calls on_connect_fail from inside its ``except OSError`` around the TCP/TLS
        # connect and does not pass the exception; it is the one being handled.
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
        try:
            self._disconnected(reason_code, flags.is_disconnect_packet_from_server)
        except Exception:
            logger.exception("handling a disconnect failed")

    def _disconnected(self, reason_code: ReasonCode, from_server: bool) -> None:
        reason = str(reason_code)
        lasted = None if self._connected_at is None else time.monotonic() - self._connected_at
        self._connected_at = None
        if reason_code.value == SESSION_TAKEN_OVER:
            self._taken_over("the broker handed our session to it (Session taken over)")
        elif self._closed_abruptly(reason_code, from_server, lasted):
            self._taken_over(
                f"most likely: the broker closed {self._abrupt_closes} connections in a row "
                "soon after they were made, without a word, as mosquitto 2.0 does when "
                "another client connects with the same id"
            )
        elif reason_code.is_failure:
            logger.warning("disconnected from broker (%s); reconnecting", reason)
        if self._on_disconnected is not None:
            self._on_disconnected(reason)

    def _closed_abruptly(
        self, reason_code: ReasonCode, from_server: bool, lasted: float | None
    ) -> bool:
        """Count connections the broker dropped (no DISCONNECT packet, no keepalive
        timeout) soon after they were made; True once that is the pattern of a takeover."""
        dropped = not from_server and reason_code.value == 128  # "Unspecified error": EOF
        if not dropped or lasted is None:
            self._abrupt_closes = 0
            return False
        short = max(SHORT_CONNECTION_S, 2 * takeover_backoff_s(self.takeovers))
        self._abrupt_closes = self._abrupt_closes + 1 if lasted < short else 1
        return self._abrupt_closes >= ABRUPT_CLOSES_FOR_TAKEOVER

    def _taken_over(self, how: str) -> None:
        """Another client connected with our id. Fighting it back every second knocks both
        off the broker for good; reconnect later and later instead, and say why."""
        self.takeovers += 1
        self.last_takeover = time.monotonic()
        delay = takeover_backoff_s(self.takeovers)
        ident = f"{self.options.role} id {self.options.client_id}"
        self.last_error = f"another client is using {ident}"
        logger.error(
            "another client is using %s (%s); give each %s its own id. Takeover %d in a "
            "row: reconnecting in %.0f s",
            ident,
            how,
            self.options.role,
            self.takeovers,
            delay,
        )
        self._client.reconnect_delay_set(
            min_delay=round(delay), max_delay=round(max(delay, RECONNECT_MAX_S))
        )

    def _handle_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        now = time.monotonic()
        with self._acks_lock:
            if self._unacked.pop(mid, None) is None:
                self._early_acks[mid] = now  # or a QoS 0 publish, written out
                if len(self._early_acks) > 1024:
                    self._early_acks = {m: t for m, t in self._early_acks.items() if now - t < 5}

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = "?"
        try:
            topic = msg.topic
            self._on_message(_inbound(msg, time.time()))
        except Exception:
            # The message is lost, the link is not: paho's thread would die of this exception.
            logger.exception("message on %s could not be handled; it was dropped", topic)


def _inbound(msg: mqtt.MQTTMessage, received_at: float) -> InboundMessage:
    expiry = None
    props = getattr(msg, "properties", None)
    if props is not None and hasattr(props, "MessageExpiryInterval"):
        expiry = float(props.MessageExpiryInterval)
    return InboundMessage(
        topic=msg.topic,
        payload=bytes(msg.payload),
        retain=bool(msg.retain),
        received_at=received_at,
        expiry_interval=expiry,
    )
