"""The bench's MQTT client: publishes triggers, gathers results, statuses and summaries."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import ValidationError

from pepi_fleet.schemas.capture import CaptureCommand, CaptureResult
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.topics import TopicKind, Topics


class Tap:
    """Anonymous loopback client watching ``<root>/#`` of several roots at once."""

    def __init__(self, port: int) -> None:
        self._cond = threading.Condition()
        self._roots: dict[str, Topics] = {}
        self.results: dict[str, dict[str, CaptureResult]] = defaultdict(dict)
        self.status_at: dict[str, dict[str, float]] = defaultdict(dict)
        self.summaries: dict[str, CaptureSetSummary] = {}
        self.arrived: dict[str, float] = {}  # capture id -> when its first result came in
        self.controller_online: set[str] = set()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def watch(self, root: str) -> Topics:
        """Subscribe to everything under ``root`` (returns once the broker confirmed)."""
        topics = Topics(root)
        with self._cond:
            self._roots[root] = topics
        self._subscribed.clear()
        self._client.subscribe(f"{root}/#", qos=1)
        if not self._subscribed.wait(10):
            raise TimeoutError(f"could not subscribe to {root}/#")
        return topics

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # -- publishing -----------------------------------------------------------------------------

    def trigger(
        self, root: str, capture_id: str, at: float | None = None, node_id: str | None = None
    ) -> None:
        """Publish a capture command (QoS 1, as the controller does): a broadcast on
        ``<root>/capture``, or to one node on ``<root>/nodes/<node_id>/capture``."""
        command = CaptureCommand(capture_id=capture_id, at=at)
        payload = command.model_dump_json(exclude_none=True)
        topics = Topics(root)
        topic = topics.node_capture(node_id) if node_id else topics.capture()
        self._client.publish(topic, payload, qos=1)

    # -- waiting --------------------------------------------------------------------------------

    def wait_results(self, capture_id: str, count: int, timeout: float) -> dict[str, CaptureResult]:
        """The results for ``capture_id`` once ``count`` nodes answered (or what came by then)."""
        self._wait(lambda: len(self.results.get(capture_id, {})) >= count, timeout)
        with self._cond:
            return dict(self.results.get(capture_id, {}))

    def wait_online(
        self, root: str, node_ids: list[str], timeout: float, after: float = 0.0
    ) -> set[str]:
        """Nodes of ``node_ids`` that published a status since ``after``; waits for all."""
        wanted = set(node_ids)

        def seen() -> set[str]:
            return {n for n, at in self.status_at[root].items() if at >= after}

        self._wait(lambda: wanted <= seen(), timeout)
        with self._cond:
            return wanted & seen()

    def wait_summary(self, capture_id: str, timeout: float) -> CaptureSetSummary | None:
        """The controller's summary for ``capture_id`` with ``downloaded`` true, or None."""
        self._wait(lambda: self._downloaded(capture_id), timeout)
        with self._cond:
            return self.summaries.get(capture_id)

    def wait_controller(self, root: str, timeout: float) -> bool:
        return self._wait(lambda: root in self.controller_online, timeout)

    def _downloaded(self, capture_id: str) -> bool:
        summary = self.summaries.get(capture_id)
        return summary is not None and summary.downloaded

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- paho thread: decode and record ---------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        root = next((r for r in self._roots if msg.topic.startswith(r + "/")), None)
        if root is None:
            return
        parsed = self._roots[root].parse(msg.topic)
        if parsed is None:
            return
        try:
            self._record(root, parsed.kind, parsed.node_id, bytes(msg.payload))
        except ValidationError:
            return  # not ours to judge here; the bench counts missing results
        with self._cond:
            self._cond.notify_all()

    def _record(self, root: str, kind: TopicKind, node_id: str | None, payload: bytes) -> None:
        if kind is TopicKind.RESULT and node_id is not None:
            result = CaptureResult.model_validate_json(payload)
            if result.capture_id is not None:
                with self._cond:
                    self.results[result.capture_id][node_id] = result
                    self.arrived.setdefault(result.capture_id, time.time())
        elif kind is TopicKind.STATUS and node_id is not None and payload:
            with self._cond:
                self.status_at[root][node_id] = time.time()
        elif kind is TopicKind.CONTROLLER_CAPTURES:
            summary = CaptureSetSummary.model_validate_json(payload)
            with self._cond:
                self.summaries[summary.capture_id] = summary
        elif kind is TopicKind.CONTROLLER_AVAILABILITY and payload == b"online":
            with self._cond:
                self.controller_online.add(root)
