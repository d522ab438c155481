"""Short-lived MQTT sessions for CLI commands: read retained state, publish, wait for an answer."""

from __future__ import annotations

import queue
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink
from pepi_fleet.schemas.errors import PepiError


class BrokerUnreachable(PepiError):
    """The broker did not accept a connection."""


@dataclass(frozen=True)
class BrokerLogin:
    """Where and as whom a CLI session connects: ``--broker``, ``--username``, ``--password``,
    ``--ca-file``."""

    broker: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    """CA certificate for an ``mqtts://`` broker with a private CA; None: the system's CAs."""

    def link_options(self, subscriptions: list[str]) -> LinkOptions:
        """The options of a CLI session's link (a client id of its own, QoS 1 subscriptions)."""
        return LinkOptions(
            client_id=f"pepi-cli-{uuid.uuid4().hex[:8]}",
            username=self.username,
            password=self.password,
            subscriptions=tuple((s, 1) for s in subscriptions),
            ca_file=str(self.ca_file) if self.ca_file else None,
        )


@contextmanager
def session(
    login: BrokerLogin, subscriptions: list[str], connect_timeout: float = 5.0
) -> Iterator[tuple[MqttLink, queue.Queue[InboundMessage]]]:
    """A connected link whose received messages land in the returned queue."""
    address = BrokerAddress.parse(login.broker)
    _probe(address, connect_timeout)
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = MqttLink(address, login.link_options(subscriptions), on_message=inbox.put)
    link.start()
    try:
        if not link.wait_connected(connect_timeout):
            raise BrokerUnreachable(
                f"broker {address.host}:{address.port} did not accept us: "
                f"{link.last_error or 'no answer'} "
                "(check --broker, --username, --password and, for mqtts://, --ca-file)"
            )
        yield link, inbox
    finally:
        link.stop()


def _probe(address: BrokerAddress, timeout: float) -> None:
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            pass
    except OSError as exc:
        raise BrokerUnreachable(
            f"cannot reach the broker at {address.host}:{address.port}: {exc.strerror or exc} "
            "(is mosquitto running? 'pepi demo' starts one; set --broker or PEPI_BROKER)"
        ) from exc


def drain(
    inbox: queue.Queue[InboundMessage], quiet_s: float = 0.4, max_s: float = 3.0
) -> list[InboundMessage]:
    """Collect messages until none arrived for ``quiet_s`` (retained bursts come at once)."""
    out: list[InboundMessage] = []
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        try:
            out.append(inbox.get(timeout=quiet_s))
        except queue.Empty:
            break
    return out
