"""The Thrift extension needs the node's secret; PEPI's methods need none, or are off."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import StartNode, wait_online
from support.controllers import (
    StartController,
    controller_credentials,
    wait_store_empty,
    wait_summary,
)
from support.expect import wait_result
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess
from support.pub import mosquitto_pub
from support.thrift_clients import camera_server, fleet_server, node_secret
from thriftpy2.thrift import TApplicationException

from pepi_fleet.broker.runner import Credentials, EmbeddedBroker
from pepi_fleet.controller.node_client import AccessRefused
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.schemas import CaptureStatus
from pepi_fleet.schemas.secret import NodeSecret

WRONG = "x" * 43


def captured(watcher: Watcher, root: str, node: NodeProcess, capture_id: str) -> None:
    """Trigger ``capture_id`` over MQTT and wait for the node's ok result."""
    began = time.time()
    watcher.publish(f"{root}/nodes/{node.node_id}/capture", capture_id)
    result = wait_result(watcher, root, node.node_id, capture_id, after=began)
    assert result.status is CaptureStatus.OK, result.error


def held(node: NodeProcess) -> set[str]:
    with fleet_server(node.thrift_port, node.data_dir) as server:
        return {c.capture_id for c in server.list_captures()}


@pytest.mark.parametrize("secret", [None, "", WRONG], ids=["missing", "empty", "wrong"])
def test_thrift_extension_without_the_secret_is_refused_and_deletes_nothing(
    start_node: StartNode, watcher: Watcher, root: str, secret: str | None
) -> None:
    node = start_node("sec1")
    captured(watcher, root, node, "keep-1")
    idl = pepi_idl.load()
    args: list[Any] = [] if secret is None else [secret]
    with camera_server(node.thrift_port, fleet=True) as server:
        calls = {
            "release": lambda: server.release("keep-1", *args),
            "list_captures": lambda: server.list_captures(*args),
            "get_capture": lambda: server.get_capture("keep-1", *args),
            "fetch_image": lambda: server.fetch_image("keep-1", 0, "jpeg", *args),
        }
        for method, call in calls.items():
            with pytest.raises(idl.Unauthorized) as refused:
                call()
            message = refused.value.message
            assert message.startswith(method) and "nothing was done" in message
        assert server.ping() is True  # the connection stays usable; PEPI's methods need none
    assert held(node) == {"keep-1"}  # nothing deleted
    with camera_server(node.thrift_port) as pepi:
        assert pepi.retrieve_stills_jpg("keep-1")


def test_thrift_extension_with_the_secret_lists_fetches_and_releases(
    start_node: StartNode, watcher: Watcher, root: str
) -> None:
    node = start_node("sec2")
    captured(watcher, root, node, "rel-1")
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert server.get_capture("rel-1").capture_id == "rel-1"
        assert server.fetch_image("rel-1", 0, "jpeg").data
        assert server.release("rel-1") is True
        assert server.list_captures() == []


def test_thrift_client_without_the_secret_raises_access_refused(
    start_node: StartNode, watcher: Watcher, root: str
) -> None:
    node = start_node("sec3")
    captured(watcher, root, node, "cli-1")
    client = ThriftNodeClient(node.node_id, ("127.0.0.1", node.thrift_port), secret=lambda: None)
    try:
        with pytest.raises(AccessRefused, match="no secret from it yet"):
            client.release("cli-1")
        with pytest.raises(AccessRefused, match="has changed"):
            ThriftNodeClient(
                node.node_id, ("127.0.0.1", node.thrift_port), secret=lambda: WRONG
            ).list_captures()
        client = ThriftNodeClient(
            node.node_id,
            ("127.0.0.1", node.thrift_port),
            secret=lambda: node_secret(node.data_dir),
        )
        assert [c.capture_id for c in client.list_captures()] == ["cli-1"]
    finally:
        client.close()


def test_thrift_secret_survives_a_restart(
    start_node: StartNode, watcher: Watcher, root: str
) -> None:
    node = start_node("sec4")
    before = node_secret(node.data_dir)
    assert (node.data_dir / "thrift-secret").stat().st_mode & 0o777 == 0o600
    node.stop()
    restarted = time.time()
    node.start()
    wait_online(watcher, root, node, after=restarted)
    with fleet_server(node.thrift_port, node.data_dir) as server:
        assert server.list_captures() == []
    assert node_secret(node.data_dir) == before


def first_live(watcher: Watcher, topic: str) -> Seen:
    """The first message on ``topic`` sent after subscribing (not a retained one)."""
    return watcher.wait_for(lambda s: s.topic == topic and not s.retain, what=f"live {topic}")


def login(broker: EmbeddedBroker, username: str) -> Credentials:
    password = broker.users.get(username)
    return Credentials(username, password) if password else broker.add_user(username)


def test_thrift_secret_topic_is_readable_by_the_controller_only(
    broker: EmbeddedBroker, start_node: StartNode, root: str
) -> None:
    node = start_node("sec5")
    secret_topic = f"{root}/nodes/{node.node_id}/secret"
    status_topic = f"{root}/nodes/{node.node_id}/status"
    controller = controller_credentials(broker)
    # one login per connection: a broker that binds the client id to the username would
    # otherwise let two of them knock each other off
    readers = {
        "another node": Watcher(broker.port, [secret_topic], *_pair(login(broker, "sec6"))),
        "another node, #": Watcher(broker.port, [f"{root}/#"], *_pair(login(broker, "sec9"))),
        "controller": Watcher(broker.port, [f"{root}/#"], *_pair(controller)),
        "automation": Watcher(broker.port, [f"{root}/#"], *_pair(login(broker, "automation"))),
        "anonymous": Watcher(broker.port, [f"{root}/#"]),
    }
    try:
        got = readers["controller"].wait_topic(secret_topic)
        assert got.retain
        assert NodeSecret.model_validate_json(got.payload).secret == node_secret(node.data_dir)
        # A heartbeat sent after subscribing: every retained message came before it. The
        # nodes' readers (they may not read status) subscribed first, so theirs came too.
        for name in ("controller", "automation", "anonymous"):
            first_live(readers[name], status_topic)
        for name, reader in readers.items():
            if name != "controller":
                assert secret_topic not in {m.topic for m in reader.messages}, name
    finally:
        for reader in readers.values():
            reader.close()


def _pair(creds: Credentials) -> tuple[str, str]:
    return creds.username, creds.password


def test_thrift_controller_downloads_and_releases_with_the_published_secret(
    broker: EmbeddedBroker,
    root: str,
    watcher: Watcher,
    start_node: StartNode,
    start_controller: StartController,
) -> None:
    node = start_node("sec7")
    ctl = start_controller()
    ctl.wait_log(f"node {node.node_id}: None -> online")
    began = time.time()
    mosquitto_pub(broker.port, f"{root}/capture", "sec-set")
    summary = wait_summary(watcher, root, "sec-set", timeout=30, downloaded=True)
    assert summary.complete and summary.downloaded
    wait_store_empty(watcher, root, node, after=began)


def test_thrift_pepi_off_refuses_pepis_methods_but_serves_the_extension(
    start_node: StartNode, watcher: Watcher, root: str
) -> None:
    node = start_node("sec8", "--thrift-pepi", "off")
    with camera_server(node.thrift_port) as pepi:
        with pytest.raises(TApplicationException, match="thrift-pepi off"):
            pepi.ping()
        with pytest.raises(TApplicationException, match="thrift-pepi off"):
            pepi.retrieve_stills_jpg("any")
        pepi.start_capture("pepi-1")  # oneway: ignored, not answered
        with pytest.raises(TApplicationException, match="thrift-pepi off"):
            pepi.enumerate_methods()  # the connection is still in step after the oneway
    captured(watcher, root, node, "mqtt-1")
    assert held(node) == {"mqtt-1"}  # the MQTT capture only: start_capture did nothing
    assert node.alive
