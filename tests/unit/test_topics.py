"""Topic building and parsing for the default and a custom root."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.topics import DEFAULT_ROOT, ParsedTopic, TopicKind, Topics

NODE = "000000006e74e900"

NodeTopic = Callable[[Topics, str], str]

NODE_TOPICS: list[tuple[NodeTopic, str, TopicKind]] = [
    (Topics.node_capture, "capture", TopicKind.NODE_CAPTURE),
    (Topics.availability, "availability", TopicKind.AVAILABILITY),
    (Topics.status, "status", TopicKind.STATUS),
    (Topics.result, "result", TopicKind.RESULT),
    (Topics.preview, "preview", TopicKind.PREVIEW),
    (Topics.settings, "set", TopicKind.SET),
    (Topics.clock_ping, "clock/ping", TopicKind.CLOCK_PING),
    (Topics.clock_pong, "clock/pong", TopicKind.CLOCK_PONG),
    (Topics.secret, "secret", TopicKind.SECRET),
]


def test_topics_default_root_is_pepi_v1() -> None:
    assert DEFAULT_ROOT == "pepi/v1"
    assert Topics().root == "pepi/v1"


@pytest.mark.parametrize("root", ["pepi/v1", "site-b/rig2"])
def test_topics_build_every_topic_under_the_root(root: str) -> None:
    t = Topics(root)
    assert t.capture() == f"{root}/capture"
    assert t.node_capture(NODE) == f"{root}/nodes/{NODE}/capture"
    assert t.availability(NODE) == f"{root}/nodes/{NODE}/availability"
    assert t.status(NODE) == f"{root}/nodes/{NODE}/status"
    assert t.result(NODE) == f"{root}/nodes/{NODE}/result"
    assert t.preview(NODE) == f"{root}/nodes/{NODE}/preview"
    assert t.settings(NODE) == f"{root}/nodes/{NODE}/set"
    assert t.clock_ping(NODE) == f"{root}/nodes/{NODE}/clock/ping"
    assert t.clock_pong(NODE) == f"{root}/nodes/{NODE}/clock/pong"
    assert t.secret(NODE) == f"{root}/nodes/{NODE}/secret"
    assert t.all_nodes("status") == f"{root}/nodes/+/status"
    assert t.controller_availability() == f"{root}/controller/availability"
    assert t.controller_captures() == f"{root}/controller/captures"


def test_topics_discovery_uses_the_discovery_prefix() -> None:
    assert Topics().discovery("pepi_node-a") == "homeassistant/device/pepi_node-a/config"
    custom = Topics("site/x", discovery_prefix="ha")
    assert custom.discovery("pepi_node-a") == "ha/device/pepi_node-a/config"


@pytest.mark.parametrize("root", ["pepi/v1", "site-b/rig2", "solo"])
@pytest.mark.parametrize(("build", "leaf", "kind"), NODE_TOPICS, ids=[n[1] for n in NODE_TOPICS])
def test_topics_parse_round_trips_node_topics(
    root: str, build: NodeTopic, leaf: str, kind: TopicKind
) -> None:
    t = Topics(root)
    topic = build(t, "node-a_1")
    assert topic.endswith("/" + leaf)
    assert t.parse(topic) == ParsedTopic(kind, "node-a_1")


@pytest.mark.parametrize("root", ["pepi/v1", "site-b/rig2"])
def test_topics_parse_root_level_topics(root: str) -> None:
    t = Topics(root)
    assert t.parse(t.capture()) == ParsedTopic(TopicKind.CAPTURE, None)
    assert t.parse(t.controller_availability()) == ParsedTopic(
        TopicKind.CONTROLLER_AVAILABILITY, None
    )
    assert t.parse(t.controller_captures()) == ParsedTopic(TopicKind.CONTROLLER_CAPTURES, None)


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/capture",
        "pepi/v2/capture",
        "pepi/v1x/capture",
        "pepi/capture",
        "pepi/v1",
        "homeassistant/device/pepi_node-a/config",
        "site-b/rig2/nodes/node-a/status",
    ],
)
def test_topics_parse_foreign_root_is_none(topic: str) -> None:
    assert Topics().parse(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "pepi/v1/",
        "pepi/v1/capture/now",
        "pepi/v1/nodes/node-a",
        "pepi/v1/nodes/node-a/",
        "pepi/v1/nodes/node-a/reboot",
        "pepi/v1/nodes/node-a/clock",
        "pepi/v1/nodes/node-a/clock/ping/x",
        "pepi/v1/nodes/node-a/status/extra",
        "pepi/v1/controller/status",
        "pepi/v1/node/node-a/status",
    ],
)
def test_topics_parse_unknown_leaf_is_none(topic: str) -> None:
    assert Topics().parse(topic) is None


@pytest.mark.parametrize("node_id", ["Node-A", "-a", "_a", "a.b", "+", "#", "", "n" * 33, "é"])
def test_topics_parse_invalid_node_id_is_none(node_id: str) -> None:
    assert Topics().parse(f"pepi/v1/nodes/{node_id}/status") is None


@pytest.mark.parametrize("root", ["", "pepi/#", "pepi/+/v1", "+", "pepi/v1/", "/", "pe\0pi"])
def test_topics_invalid_root_raises(root: str) -> None:
    with pytest.raises(PayloadError, match="invalid topic root"):
        Topics(root)


@pytest.mark.parametrize("node_id", ["Node-A", "a/b", "+", "#", "", "n" * 33, "-a"])
@pytest.mark.parametrize(("build", "leaf", "kind"), NODE_TOPICS, ids=[n[1] for n in NODE_TOPICS])
def test_topics_invalid_node_id_raises_when_building(
    node_id: str, build: NodeTopic, leaf: str, kind: TopicKind
) -> None:
    with pytest.raises(PayloadError, match="invalid node id"):
        build(Topics(), node_id)


def test_topics_longest_node_id_is_accepted() -> None:
    node_id = "n" * 32
    t = Topics()
    assert t.parse(t.status(node_id)) == ParsedTopic(TopicKind.STATUS, node_id)


@pytest.mark.parametrize("root", ["pepi/v1", "site-b/rig2"])
def test_topics_site_bridge_round_trips(root: str) -> None:
    t = Topics(root)
    assert t.site_bridge("north") == f"{root}/sites/north/bridge"
    assert t.parse(t.site_bridge("north")) == ParsedTopic(TopicKind.SITE_BRIDGE, site="north")


@pytest.mark.parametrize(
    "topic", ["pepi/v1/sites/North/bridge", "pepi/v1/sites/+/bridge", "pepi/v1/sites/n/other"]
)
def test_topics_parse_bad_site_bridge_topic_is_none(topic: str) -> None:
    assert Topics().parse(topic) is None


def test_topics_site_bridge_refuses_a_bad_site() -> None:
    with pytest.raises(PayloadError, match="invalid site id"):
        Topics().site_bridge("a/b")
