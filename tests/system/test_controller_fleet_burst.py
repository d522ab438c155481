"""The shipped broker limits against a fleet of 500 (simulated) nodes: the controller's
retained burst at start-up and a full-fleet capture's burst of results are all delivered."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.fleet_sim import FleetSim, start_sim_broker
from pepi_fleet.broker.runner import EmbeddedBroker, shipped_setting
from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.presence import NodeState
from pepi_fleet.controller.service import Controller

pytestmark = pytest.mark.system

NODES = 500
ROOT = "pepi-t/burst"
HEARTBEAT_S = 120.0
"""Long: a status the broker dropped would not be made good by a heartbeat within the test."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """mosquitto with the shipped queue limits and the simulator's login."""
    b = EmbeddedBroker(root="pepi-t/+", persistence=False, workdir=tmp_path / "broker")
    b.users["controller"] = secrets.token_urlsafe(12)
    start_sim_broker(b, secrets.token_urlsafe(12))
    yield b
    b.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def test_controller_every_result_of_a_500_node_burst_reaches_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    assert int(shipped_setting("max_queued_messages")) >= 4 * NODES  # the documented rule
    sim = FleetSim(
        broker.url,
        ROOT,
        NODES,
        password=broker.users["fleet-sim"],
        heartbeat_s=HEARTBEAT_S,
    ).start()  # every node's retained availability and status wait in the broker
    config = ControllerConfig(
        broker=broker.url,
        username="controller",
        password=broker.users["controller"],
        topic_root=ROOT,
        data_dir=tmp_path / "data",
        discovery=False,
    )
    controller = Controller(config)
    try:
        controller.start()
        wait_for(
            lambda: controller.presence.counts()[NodeState.ONLINE] == NODES,
            30,
            f"all {NODES} retained statuses delivered at start-up "
            f"({controller.presence.counts()[NodeState.ONLINE]} online)",
        )

        controller.trigger("burst-1")

        def recorded() -> int:
            detail = controller.ledger.get_set("burst-1")
            return 0 if detail is None else len(detail.results)

        wait_for(lambda: recorded() == NODES, 60, f"every result recorded ({recorded()})")
        assert len(sim.results["burst-1"]) == NODES
        detail = controller.ledger.get_set("burst-1")
        assert detail is not None and {r.node_id for r in detail.results} == set(sim.node_ids)
        assert all(r.result.status == "ok" for r in detail.results)
    finally:
        controller.stop()
        sim.stop()
    assert "being dropped" not in broker.log_path.read_text(errors="replace")
