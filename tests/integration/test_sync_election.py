"""The controller elects the rig's camera sync server among ``--sync-role elected`` nodes,
with a real mosquitto, a real controller and real node processes whose ``picamera2`` is
the fake (tests/support/fake_picamera2: we have no Pi cameras in CI)."""

from __future__ import annotations

import os
import time

import pytest
from conftest import StartNode
from support.controllers import StartController
from support.fake_camera import FAKE_PICAMERA2_DIR
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess

from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus
from pepi_fleet.schemas.status import NodeStatus
from pepi_fleet.schemas.sync import SyncServer

PI_NODE = ("--camera", "picamera2", "--frame-lock", "--sync-role", "elected")


@pytest.fixture(autouse=True)
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node processes started by this module import the fake picamera2."""
    path = [str(FAKE_PICAMERA2_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))


def sync_mode(watcher: Watcher, root: str, node: NodeProcess, mode: str, after: float) -> None:
    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/nodes/{node.node_id}/status" or seen.at < after:
            return False
        status = NodeStatus.model_validate_json(seen.payload)
        sync = status.cameras[0].sync
        return status.sync_role == "elected" and sync is not None and sync.mode == mode

    watcher.wait_for(match, timeout=20, what=f"{node.node_id} as sync {mode}")


def election(watcher: Watcher, root: str, node_id: str, after: float) -> SyncServer:
    seen = watcher.wait_for(
        lambda s: (
            s.topic == f"{root}/sync/server"
            and s.at >= after
            and SyncServer.model_validate_json(s.payload).node_id == node_id
        ),
        timeout=20,
        what=f"{node_id} elected",
    )
    return SyncServer.model_validate_json(seen.payload)


def test_controller_elects_the_first_online_node_and_re_elects_when_it_leaves(
    root: str, watcher: Watcher, start_node: StartNode, start_controller: StartController
) -> None:
    began = time.time()
    second = start_node("sync-b", *PI_NODE)
    first = start_node("sync-a", *PI_NODE)
    start_controller()
    election(watcher, root, "sync-a", began)
    sync_mode(watcher, root, first, "server", began)
    sync_mode(watcher, root, second, "client", began)

    # results say which frames were taken in sync (the fake's server locks after 100 frames,
    # so the first capture may be either; the field must be there, true or false)
    watcher.publish(f"{root}/nodes/sync-a/capture", "synced-1")
    seen = watcher.wait_topic(f"{root}/nodes/sync-a/result", after=began)
    result = CaptureResult.model_validate_json(seen.payload)
    assert result.status is CaptureStatus.OK, result.error
    assert result.frames[0].in_sync is not None

    # the server goes away: the next online candidate serves
    left = time.time()
    first.stop()
    election(watcher, root, "sync-b", left)
    sync_mode(watcher, root, second, "server", left)

    # it comes back: the rig keeps its server (a change makes every client resync)
    back = time.time()
    first.start()
    sync_mode(watcher, root, first, "client", back)
    assert not [
        s for s in watcher.messages
        if s.topic == f"{root}/sync/server" and s.at >= back
        and SyncServer.model_validate_json(s.payload).node_id != "sync-b"
    ]  # fmt: skip
