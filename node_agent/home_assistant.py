"""The node as a Home Assistant device: retained discovery, re-announced on HA's birth, and a
low-rate live preview for HA's camera entity. Runs on the node's control and heartbeat
threads; never on paho's."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from pepi_fleet.node.camera.base import Camera
from pepi_fleet.schemas.discovery import ha_status_topic, node_discovery, node_object_id
from pepi_fleet.schemas.topics import Topics

logger = logging.getLogger(__name__)

LIVE_PREVIEW_WIDTH = 320
"""Live previews for Home Assistant stay small: a few kB per frame, far under any limit."""

Publish = Callable[[str, bytes | str, int, bool], object]
"""(topic, payload, qos, retain)"""


class NodeAnnouncer:
    """Discovery and live previews of one node."""

    def __init__(
        self,
        topics: Topics,
        node_id: str,
        version: str,
        camera: Camera,
        publish: Publish,
        clock: Callable[[], float],
        live_every_s: float,
    ) -> None:
        self.topics = topics
        self.node_id = node_id
        self._version = version
        self._camera = camera
        self._publish = publish
        self._clock = clock
        self._live_every_s = live_every_s
        self._next_live = -math.inf

    @property
    def birth_topic(self) -> str:
        return ha_status_topic(self.topics)

    def announce(self) -> None:
        """Publish the device's discovery payload (retained)."""
        infos = self._camera.infos()
        model = infos[0].model if infos else "camera"
        payload = node_discovery(self.topics, self.node_id, self._version, model, len(infos))
        self._publish(
            self.topics.discovery(node_object_id(self.node_id)),
            payload.model_dump_json(exclude_none=True),
            1,
            True,
        )

    def on_birth(self, payload: bytes) -> bool:
        """Home Assistant came (back) online: True when the device should be announced."""
        return payload.strip() == b"online"

    def live_due(self) -> bool:
        return self._live_every_s > 0 and self._clock() >= self._next_live

    def publish_live(self) -> None:
        """One small JPEG of camera 0 for Home Assistant's camera entity (QoS 0)."""
        self._next_live = self._clock() + self._live_every_s
        jpeg = self._camera.preview_jpeg(0, LIVE_PREVIEW_WIDTH)
        self._publish(self.topics.live_preview(self.node_id), jpeg, 0, False)
