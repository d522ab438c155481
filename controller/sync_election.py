"""The controller's election of the rig's libcamera sync server among ``elected``-role nodes.

Rule: keep the elected node while it is online (a new server makes every client resync);
otherwise the first online candidate by id. Published retained on ``<root>/sync/server``,
so a node that starts later learns it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.core.decode import decode
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas.sync import SyncServer
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

MAX_ELECTION_BYTES = 1024
ELECTED_ROLE = "elected"


def candidates(nodes: Iterable[NodeView]) -> list[str]:
    """Online nodes that follow the election and whose libcamera has sync, by id."""
    found = []
    for view in nodes:
        status = view.status
        if view.state is not NodeState.ONLINE or status is None:
            continue
        if status.sync_role != ELECTED_ROLE:
            continue
        if any(c.sync is not None and c.sync.mode == "unsupported" for c in status.cameras):
            continue
        found.append(view.node_id)
    return sorted(found)


def elect(current: str | None, eligible: list[str]) -> str | None:
    """The server: ``current`` while eligible, else the first eligible node (None: nobody)."""
    if current is not None and current in eligible:
        return current
    return eligible[0] if eligible else current


class SyncElection:
    """Holds the retained election and republishes it when the rule picks another node."""

    def __init__(
        self,
        topics: Topics,
        publish: Callable[[str, str, bool], object],
        clock: Callable[[], float],
    ) -> None:
        self.topics = topics
        self._publish = publish
        self._clock = clock
        self.server: str | None = None

    def on_message(self, msg: InboundMessage) -> bool:
        """Record the retained election (ours from before a restart, or a user's)."""
        parsed = self.topics.parse(msg.topic)
        if parsed is None or parsed.kind is not TopicKind.SYNC_SERVER:
            return False
        self.server = (
            decode(SyncServer, msg.payload, MAX_ELECTION_BYTES).node_id if msg.payload else None
        )
        return True

    def update(self, nodes: Iterable[NodeView]) -> str | None:
        """Elect from ``nodes``; publish when the server changes. The server now."""
        eligible = candidates(nodes)
        if not eligible:
            return self.server
        chosen = elect(self.server, eligible)
        if chosen != self.server:
            logger.info("camera sync: %s elected server (was %s)", chosen, self.server)
            self.server = chosen
            payload = SyncServer(node_id=chosen, elected_at=self._clock())
            self._publish(self.topics.sync_server(), payload.model_dump_json(), True)
        return chosen
