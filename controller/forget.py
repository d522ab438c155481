"""``pepi controller forget NODE``: clear what the broker keeps of a node that is gone."""

from __future__ import annotations

from pepi_fleet.controller.home_assistant import forget_payloads
from pepi_fleet.controller.oneshot import BrokerLogin, session
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.topics import Topics


def forget_node(login: BrokerLogin, topics: Topics, node_id: str) -> list[str]:
    """Publish empty retained messages on the node's retained topics; the topics cleared.

    A running controller sees the status cleared and shows the node ``removed``; Home
    Assistant removes the device on the empty discovery payload.
    """
    cleared = forget_payloads(topics, node_id)
    with session(login, []) as (link, _inbox):
        for topic in cleared:
            info = link.publish(topic, b"", qos=1, retain=True)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError) as exc:
                raise PepiError(f"could not clear {topic}: {exc}") from exc
    return cleared
