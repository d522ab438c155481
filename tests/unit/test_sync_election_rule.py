"""The controller's camera sync server election, without a broker."""

from __future__ import annotations

from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.controller.sync_election import SyncElection, candidates, elect
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.node.camera.pi_sync import resolve_role
from pepi_fleet.schemas.camera import CameraSync
from pepi_fleet.schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)
from pepi_fleet.schemas.sync import SyncServer
from pepi_fleet.schemas.topics import TopicKind, Topics

TOPICS = Topics("t/x")


def view(
    node_id: str,
    state: NodeState = NodeState.ONLINE,
    role: str | None = "elected",
    mode: str = "client",
) -> NodeView:
    status = NodeStatus(
        node_id=node_id,
        sent_at=1.0,
        heartbeat_s=1.0,
        version="t",
        thrift=ThriftEndpoint(host="127.0.0.1", port=6000),
        cameras=[
            CameraInfo(
                index=0,
                model="imx477",
                resolution=(640, 480),
                max_resolution=(4056, 3040),
                sync=CameraSync(mode=mode),  # type: ignore[arg-type]
            )
        ],
        stream_urls=[],
        store=StoreInfo(captures=0, bytes=0, free_bytes=1),
        clock=ClockInfo(synced=True),
        sync_role=role,  # type: ignore[arg-type]
    )
    return NodeView(node_id, state, status, 1.0, 1.0)


def test_candidates_are_online_elected_role_nodes_with_sync() -> None:
    nodes = [
        view("c"),
        view("a", state=NodeState.STALE),
        view("b"),
        view("d", role="server"),
        view("e", mode="unsupported"),
    ]
    assert candidates(nodes) == ["b", "c"]


def test_elect_keeps_the_server_while_it_is_eligible() -> None:
    assert elect(None, ["b", "c"]) == "b"
    assert elect("c", ["b", "c"]) == "c"
    assert elect("a", ["b", "c"]) == "b"
    assert elect("a", []) == "a"


def test_election_publishes_retained_only_on_a_change() -> None:
    sent: list[tuple[str, str, bool]] = []
    election = SyncElection(TOPICS, lambda t, p, r: sent.append((t, p, r)), lambda: 5.0)
    assert election.update([view("b"), view("c")]) == "b"
    assert election.update([view("b"), view("c")]) == "b"
    assert len(sent) == 1
    topic, payload, retain = sent[0]
    assert (topic, retain) == ("t/x/sync/server", True)
    assert SyncServer.model_validate_json(payload) == SyncServer(node_id="b", elected_at=5.0)
    assert election.update([view("b", state=NodeState.OFFLINE), view("c")]) == "c"
    assert election.update([]) == "c"  # nobody eligible: nothing to change
    assert len(sent) == 2


def test_election_resumes_from_the_retained_one() -> None:
    election = SyncElection(TOPICS, lambda t, p, r: None, lambda: 5.0)
    payload = SyncServer(node_id="c", elected_at=1.0).model_dump_json().encode()
    assert election.on_message(InboundMessage("t/x/sync/server", payload, True, 0.0))
    assert election.update([view("b"), view("c")]) == "c"
    assert election.on_message(InboundMessage("t/x/sync/server", b"", True, 0.0))
    assert election.server is None
    assert not election.on_message(InboundMessage("t/x/settings", b"{}", True, 0.0))
    assert TOPICS.parse("t/x/sync/server").kind is TopicKind.SYNC_SERVER  # type: ignore[union-attr]


def test_an_elected_role_node_starts_as_a_client_without_listening() -> None:
    def never(_s: float) -> bool:
        raise AssertionError("an elected-role node does not listen for a server")

    assert resolve_role("elected", never) == "client"
