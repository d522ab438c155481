"""The controller as a Home Assistant device: discovery, a retained state, commands from HA.

Pure apart from the ``publish`` callable it is given: the controller's worker thread calls
``on_connected``, ``on_birth``, ``on_command`` and ``update``; state is published only
when it changed, at most every ``min_interval_s`` (a fleet of 1000 nodes changing state
must not turn into 1000 retained publishes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pepi_fleet.controller.trigger_lead import LeadEstimate
from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.core.decode import decode
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.discovery import (
    controller_discovery,
    controller_object_id,
)
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.topics import Topics

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 1024
DEFAULT_SCHEDULE_DELAY_S = 1.0
MIN_SCHEDULE_DELAY_S, MAX_SCHEDULE_DELAY_S = 0.1, 60.0
CHOICES_FILE = "home_assistant.json"
"""In the controller's data dir: the schedule delay and adaptive switch chosen in Home
Assistant, kept across restarts (as Home Assistant keeps a number's or a switch's value)."""

Publish = Callable[[str, bytes | str, bool], object]
"""(topic, payload, retain)"""


class ControllerState(BaseModel):
    """``<root>/controller/state`` (retained): what Home Assistant's sensors show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes_online: int = 0
    nodes_stale: int = 0
    nodes_offline: int = 0
    nodes_unreachable: int = 0
    last_set_id: str | None = None
    last_set_status: str | None = Field(default=None, description="complete or incomplete")
    last_set_spread_s: float | None = None
    last_set_images_done: int = 0
    last_set_images_expected: int = 0
    schedule_delay_s: float = DEFAULT_SCHEDULE_DELAY_S
    adaptive_delay: bool = Field(
        default=False,
        description="the scheduled capture fires trigger_lead_s ahead instead of "
        "schedule_delay_s (Home Assistant's Adaptive delay switch)",
    )
    trigger_lead_s: float | None = Field(
        default=None,
        description="how far ahead a capture without a time is scheduled (`pepi capture "
        "--delay auto`): the slowest node's trigger delivery latency plus margins",
    )
    trigger_latency_s: float | None = Field(
        default=None, description="the slowest online node's measured delivery latency (p99)"
    )


class ControllerCommand(BaseModel):
    """``<root>/controller/command``: what Home Assistant's buttons, number and switch send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str = Field(
        pattern=r"^(capture_scheduled|set_schedule_delay|set_adaptive_delay|lock_exposure)$"
    )
    value: float | None = Field(default=None, allow_inf_nan=False)
    enabled: bool | None = Field(
        default=None, description="set_adaptive_delay: true = the adaptive lead, false = value"
    )
    reference: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}(:[0-9]{1,2})?$",
        description="lock_exposure: NODE[:CAMERA]; absent = first online node, camera 0",
    )


class HomeAssistantChoices(BaseModel):
    """What ``CHOICES_FILE`` holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schedule_delay_s: float = Field(
        default=DEFAULT_SCHEDULE_DELAY_S, ge=MIN_SCHEDULE_DELAY_S, le=MAX_SCHEDULE_DELAY_S
    )
    adaptive_delay: bool = False


def load_choices(path: Path) -> HomeAssistantChoices:
    """The choices kept in ``path``; the defaults if there are none or they are unreadable
    (said in the log: a bad file must not stop the controller)."""
    try:
        return HomeAssistantChoices.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return HomeAssistantChoices()
    except (OSError, ValidationError) as exc:
        logger.warning("ignoring %s (%s): Home Assistant's delay choices start anew", path, exc)
        return HomeAssistantChoices()


@dataclass(frozen=True)
class ScheduledCapture:
    """A command's outcome: trigger every node ``delay_s`` ahead, on the frame grid
    (None: the adaptive trigger lead, which the controller knows)."""

    delay_s: float | None


@dataclass(frozen=True)
class LockExposure:
    """A command's outcome: lock every camera's exposure to ``reference``'s (None: default)."""

    reference: str | None = None


class HomeAssistantBridge:
    """Publishes the controller's discovery and state; turns HA commands into actions."""

    def __init__(
        self,
        topics: Topics,
        publish: Publish,
        version: str,
        url: str | None,
        clock: Callable[[], float],
        enabled: bool = True,
        min_interval_s: float = 1.0,
        choices_file: Path | None = None,
    ) -> None:
        self.topics = topics
        self._publish = publish
        self._version = version
        self._url = url
        self._clock = clock
        self.enabled = enabled
        self._min_interval_s = min_interval_s
        self._choices_file = choices_file
        kept = HomeAssistantChoices() if choices_file is None else load_choices(choices_file)
        self._state = ControllerState(
            schedule_delay_s=kept.schedule_delay_s, adaptive_delay=kept.adaptive_delay
        )
        self._published: ControllerState | None = None
        self._last_publish = -math.inf

    @property
    def state(self) -> ControllerState:
        return self._state

    def subscriptions(self) -> list[tuple[str, int]]:
        """Home Assistant's birth topic and the command topic."""
        if not self.enabled:
            return []
        return [
            (f"{self.topics.discovery_prefix}/status", 1),
            (self.topics.controller_command(), 1),
        ]

    def on_connected(self) -> None:
        """Announce (retained) and publish the state at once."""
        self.announce()
        self._published = None
        self.flush(force=True)

    def on_birth(self, payload: bytes) -> None:
        """Home Assistant (re)started: its birth message is not retained, so announce again."""
        if payload.strip() == b"online":
            self.announce()
            self.flush(force=True)

    def announce(self) -> None:
        if not self.enabled:
            return
        payload = controller_discovery(self.topics, self._version, self._url)
        self._publish(
            self.topics.discovery(controller_object_id(self.topics)),
            payload.model_dump_json(exclude_none=True),
            True,
        )

    def on_command(self, payload: bytes) -> ScheduledCapture | LockExposure | None:
        """A button press or number change; a scheduled capture or a lock to start, if asked."""
        try:
            command = decode(ControllerCommand, payload, MAX_COMMAND_BYTES)
        except PayloadError as exc:
            logger.warning("controller command ignored: %s", exc)
            return None
        if command.action == "lock_exposure":
            return LockExposure(command.reference)
        if command.action == "set_schedule_delay":
            if command.value is None:
                logger.warning("set_schedule_delay without a value ignored")
                return None
            delay = min(max(command.value, MIN_SCHEDULE_DELAY_S), MAX_SCHEDULE_DELAY_S)
            self._choose(schedule_delay_s=delay)
            return None
        if command.action == "set_adaptive_delay":
            if command.enabled is None:
                logger.warning("set_adaptive_delay without enabled (true or false) ignored")
                return None
            self._choose(adaptive_delay=command.enabled)
            return None
        if self._state.adaptive_delay:
            return ScheduledCapture(None)
        return ScheduledCapture(self._state.schedule_delay_s)

    def _choose(self, **choice: float | bool) -> None:
        """A value chosen in Home Assistant: in the state at once, and kept for a restart."""
        self._state = self._state.model_copy(update=choice)
        if self._choices_file is not None:
            kept = HomeAssistantChoices(
                schedule_delay_s=self._state.schedule_delay_s,
                adaptive_delay=self._state.adaptive_delay,
            )
            try:
                write_atomic(self._choices_file, kept.model_dump_json().encode())
            except OSError as exc:
                logger.warning(
                    "cannot keep Home Assistant's choice in %s: %s", self._choices_file, exc
                )
        self.flush(force=True)

    def update_counts(self, online: int, stale: int, offline: int, unreachable: int = 0) -> None:
        self._state = self._state.model_copy(
            update={
                "nodes_online": online,
                "nodes_stale": stale,
                "nodes_offline": offline,
                "nodes_unreachable": unreachable,
            }
        )

    def update_lead(self, estimate: LeadEstimate) -> None:
        """The adaptive lead, to the millisecond (finer changes are not worth a publish)."""
        latency = None if estimate.latency_s is None else round(estimate.latency_s, 3)
        self._state = self._state.model_copy(
            update={"trigger_lead_s": round(estimate.lead_s, 3), "trigger_latency_s": latency}
        )

    def update_set(self, summary: CaptureSetSummary, done: int, expected: int) -> None:
        self._state = self._state.model_copy(
            update={
                "last_set_id": summary.capture_id,
                "last_set_status": "complete" if summary.complete else "incomplete",
                "last_set_spread_s": summary.spread_s,
                "last_set_images_done": done,
                "last_set_images_expected": expected,
            }
        )

    def flush(self, force: bool = False) -> None:
        """Publish the state if it changed (and the interval passed, unless ``force``).

        Published with discovery off too: ``pepi capture --delay auto`` reads the lead here.
        """
        if self._state == self._published:
            return
        now = self._clock()
        if not force and now - self._last_publish < self._min_interval_s:
            return
        self._publish(self.topics.controller_state(), self._state.model_dump_json(), True)
        self._published = self._state
        self._last_publish = now


def forget_payloads(topics: Topics, node_id: str) -> list[str]:
    """The retained topics to clear so a node disappears (controller and Home Assistant)."""
    return [
        topics.status(node_id),
        topics.availability(node_id),
        topics.secret(node_id),
        topics.discovery(node_id),
    ]
