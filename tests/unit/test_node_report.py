"""``pepi nodes`` and ``GET /api/nodes``: one presence rule, one model, one set of units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pepi_fleet.controller.clock_probe import ClockBook
from pepi_fleet.controller.commands import node_table
from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.node_report import NODE_LIST, NodeOut, node_reports
from pepi_fleet.controller.presence_feed import tracker_from_messages
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.routes_nodes import list_nodes
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas import NodeStatus
from pepi_fleet.schemas.clock import ClockPong
from pepi_fleet.schemas.topics import Topics

NOW = 1_767_225_600.0
HOUR = 3600.0
TOPICS = Topics("pepi/v1")


def status(node_id: str, sent_at: float, heartbeat_s: float = 5.0) -> NodeStatus:
    return NodeStatus.model_validate(
        {
            "node_id": node_id,
            "sent_at": sent_at,
            "heartbeat_s": heartbeat_s,
            "version": "test",
            "thrift": {"host": "127.0.0.1", "port": 6000},
            "cameras": [
                {"index": i, "model": "synthetic", "resolution": r, "max_resolution": r}
                for i, r in enumerate([(640, 480), (320, 240)])
            ],
            "stream_urls": [],
            "store": {"captures": 3, "bytes": 10, "free_bytes": 1},
            "clock": {"synced": False, "offset_estimate_s": 0.25},
        }
    )


def retained(node_id: str, availability: str, sent_at: float, received_at: float) -> list[Any]:
    """A node's retained availability and status as a session receives them."""
    return [
        InboundMessage(
            TOPICS.availability(node_id), availability.encode(), True, received_at=received_at
        ),
        InboundMessage(
            TOPICS.status(node_id),
            status(node_id, sent_at).model_dump_json().encode(),
            True,
            received_at=received_at,
        ),
    ]


# node -> (availability, the node's own sent_at, when its status arrived, the state both report)
FLEET = {
    "behind": ("online", NOW - 2 * HOUR, NOW - 1, "online"),  # a Pi without RTC, NTP not yet up
    "ahead": ("online", NOW + 2 * HOUR, NOW - 1, "online"),
    "quiet": ("online", NOW - 1, NOW - 20, "stale"),  # right clock, no status for 4 heartbeats
    "gone": ("offline", NOW - 2 * HOUR, NOW - 1, "offline"),
}


def messages() -> list[InboundMessage]:
    return [m for node, (a, sent, got, _) in FLEET.items() for m in retained(node, a, sent, got)]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    """A controller that is never started: no broker, its presence fed by hand."""
    ctl = Controller(ControllerConfig(data_dir=tmp_path / "data"), clock=lambda: NOW)
    yield ctl
    ctl.downloader.close()
    ctl.ledger.close()


def api_nodes(controller: Controller) -> list[dict[str, Any]]:
    """``GET /api/nodes`` of ``controller``, after its worker's handler saw ``messages()``."""
    for msg in messages():
        controller._handle(msg)  # what the worker thread runs for each message off the broker
    nodes: list[dict[str, Any]] = list_nodes(controller).model_dump(mode="json")["nodes"]
    return nodes


def cli_nodes() -> list[dict[str, Any]]:
    """``pepi nodes --json`` for a session that read ``messages()`` (clock probes unanswered)."""
    presence = tracker_from_messages(TOPICS, messages(), lambda: NOW)
    nodes: list[dict[str, Any]] = json.loads(
        NODE_LIST.dump_json(node_reports(presence.nodes(), NOW, ClockBook().estimate))
    )
    return nodes


def test_node_report_far_off_node_clock_is_classified_alike_by_cli_and_api(
    controller: Controller,
) -> None:
    expected = {node: state for node, (*_, state) in FLEET.items()}
    assert {n["node_id"]: n["state"] for n in cli_nodes()} == expected
    assert {n["node_id"]: n["state"] for n in api_nodes(controller)} == expected


def test_node_report_cli_json_and_api_share_field_names_and_units(
    controller: Controller,
) -> None:
    cli, api = cli_nodes(), api_nodes(controller)
    assert [list(n) for n in cli] == [list(n) for n in api]
    assert set(cli[0]) == set(NodeOut.model_fields)
    for ours, theirs in zip(cli, api, strict=True):
        # Everything agrees but the age, which the API takes from the wall clock.
        ours.pop("heartbeat_age_s")
        theirs.pop("heartbeat_age_s")
        assert ours == theirs
    by_id = {n["node_id"]: n for n in cli}
    assert by_id["behind"]["clock_offset_s"] == 0.25  # seconds, as the node estimated it
    assert by_id["behind"]["last_heartbeat_at"] == NOW - 1  # when it arrived, not sent_at


def test_node_report_table_shows_seconds_as_milliseconds() -> None:
    clocks = ClockBook()
    clocks.add("behind", ClockPong(seq=1, t1=NOW, t2=NOW + 0.0131, t3=NOW + 0.0131), NOW + 0.002)
    presence = tracker_from_messages(TOPICS, messages(), lambda: NOW)
    header, *rows = node_table(node_reports(presence.nodes(), NOW, clocks.estimate))
    assert header.split() == [
        "NODE", "STATE", "ADDRESS", "CAMERAS", "AGE", "CAPTURES", "OFFSET", "RTT", "SYNCED"
    ]  # fmt: skip
    behind = next(r for r in rows if r.startswith("behind"))
    assert behind.split() == [
        "behind", "online", "127.0.0.1:6000", "640x480,320x240", "1s", "3", "12.100ms",
        "2.000ms", "no",
    ]  # fmt: skip
