"""The page against 200 simulated nodes: every state rendered from one snapshot plus the event
stream's diffs, an offline node shown as such, filters and the dense grid."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from support.controllers import ControllerProcess
from support.web import controller_process, event_stream, serving, wait_until

from bench.fleet_sim import FleetSim, start_sim_broker
from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.core.availability import OFFLINE

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.system

NODES = 200
ROOT = "pepi-t/page"
HEARTBEAT_S = 2.0
OUTPUT = REPO / "test-output" / "web"
IN_VIEW = """() => {
  const top = document.querySelector("header.fleet").getBoundingClientRect().bottom;
  return Array.from(document.querySelectorAll("#nodes .node")).filter((c) => {
    const r = c.getBoundingClientRect();
    return r.top >= top && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth;
  }).length;
}"""
"""Cards wholly on screen, under the sticky header."""


@pytest.fixture
def sim_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """mosquitto with the project's config, a controller login and the simulator's."""
    b = EmbeddedBroker(root="pepi-t/+", persistence=False, workdir=tmp_path / "broker")
    b.users["controller"] = secrets.token_urlsafe(12)
    start_sim_broker(b, secrets.token_urlsafe(12))
    yield b
    b.close()


@pytest.fixture
def fleet(sim_broker: EmbeddedBroker) -> Iterator[FleetSim]:
    sim = FleetSim(
        sim_broker.url, ROOT, NODES, password=sim_broker.users["fleet-sim"], heartbeat_s=HEARTBEAT_S
    ).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def controller(
    sim_broker: EmbeddedBroker, fleet: FleetSim, tmp_path: Path
) -> Iterator[ControllerProcess]:
    ctl = controller_process(sim_broker, ROOT, tmp_path)
    with serving(ctl):
        yield ctl


def online_count(api: httpx.Client) -> int:
    return int(api.get("/api/nodes").json()["counts"]["online"])


def test_web_fleet_page_renders_200_nodes_and_follows_an_offline_one(
    browser: Browser, fleet: FleetSim, controller: ControllerProcess
) -> None:
    with httpx.Client(base_url=controller.url, timeout=10) as api:
        wait_until(lambda: online_count(api) == NODES, 60, f"{NODES} nodes online")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(controller.url + "/", wait_until="domcontentloaded")
        cards = page.locator("#nodes .node")
        expect(page.locator("#nodes .node.state-online")).to_have_count(NODES, timeout=20_000)
        expect(page.locator("#count-online")).to_have_text(str(NODES))
        expect(page.locator("#node-shown")).to_have_text(f"{NODES} of {NODES} shown")
        expect(page.locator("#nodes")).to_have_class(re.compile(r"\bdense\b"))  # a large rig
        page.locator("#nodes").evaluate("grid => grid.scrollIntoView()")
        assert page.evaluate(IN_VIEW) >= 100, "the grid shows fewer than 100 cameras at once"
        ids = cards.evaluate_all("cards => cards.map(c => c.dataset.node)")
        assert ids == sorted(fleet.node_ids)
        first = page.locator(f"#node-{fleet.node_ids[0]}")
        expect(first.locator("[data-field=cameras]")).to_contain_text("cam0")
        page.evaluate("window.__sameDocument = true")

        # heartbeats stream on; the page fetched its nodes once, never a card per heartbeat
        page.wait_for_timeout(3 * HEARTBEAT_S * 1000)
        node_fetches = [u for u in requests if "/api/nodes" in u or "/ui/nodes" in u]
        assert node_fetches == [controller.url + "/api/nodes"], node_fetches

        victim = fleet.nodes[NODES // 2]
        fleet.send(victim, fleet.topics.availability(victim.node_id), OFFLINE, retain=True)
        card = page.locator(f"#node-{victim.node_id}")
        expect(card).to_have_class(re.compile(r"\bstate-offline\b"), timeout=10_000)
        expect(card.locator("[data-field=unreachable]")).to_contain_text("Unreachable")
        expect(page.locator("#count-offline")).to_have_text("1")
        expect(page.locator("#count-online")).to_have_text(str(NODES - 1))
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"

        page.select_option("#node-filter", "offline")
        expect(page.locator("#nodes .node:visible")).to_have_count(1)
        expect(page.locator("#nodes .node:visible")).to_have_id(f"node-{victim.node_id}")
        # a scheduled capture: every node it expects is busy until its result is in
        page.select_option("#node-filter", "busy")
        page.locator("#delay").fill("3")
        page.get_by_role("button", name="Capture all").click()
        expect(page.locator("#nodes .node:visible")).to_have_count(NODES - 1)
        expect(page.locator(f"#node-{victim.node_id}")).to_be_hidden()  # offline: not expected
        expect(page.locator("#nodes .node:visible")).to_have_count(0, timeout=20_000)
        page.select_option("#node-filter", "all")
        page.select_option("#node-sort", "state")
        expect(cards.first).to_have_id(f"node-{victim.node_id}")  # problems first
        page.fill("#node-find", fleet.node_ids[7])
        expect(page.locator("#nodes .node:visible")).to_have_count(1)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.fill("#node-find", "")
        page.screenshot(path=str(OUTPUT / "page-fleet-grid.png"))
    finally:
        page.close()


def test_web_fleet_events_diff_stream_sends_each_node_once_then_changes(
    fleet: FleetSim, controller: ControllerProcess
) -> None:
    with httpx.Client(base_url=controller.url, timeout=10) as api:
        wait_until(lambda: online_count(api) == NODES, 60, f"{NODES} nodes online")
    seen: dict[str, list[dict[str, object]]] = {}
    kinds: set[str] = set()
    victim = fleet.nodes[3]
    cut = False
    with event_stream(controller.url, timeout=120, params={"nodes": "diff"}) as events:
        for kind, data in events:
            kinds.add(kind)
            if kind == "nodes":
                for change in data["changed"]:
                    seen.setdefault(change["node_id"], []).append(change)
                if len(seen) == NODES and not cut:  # every node arrived: now take one off
                    fleet.send(
                        victim, fleet.topics.availability(victim.node_id), OFFLINE, retain=True
                    )
                    cut = True
                if any(c.get("state") == "offline" for c in seen.get(victim.node_id, [])):
                    break
    assert "status" not in kinds, "the page's stream carries no per-heartbeat status"
    assert "hello" in kinds and "presence" in kinds
    for node_id in fleet.node_ids:
        first, *later = seen[node_id]
        assert first["state"] == "online" and "cameras" in first
        for change in later:  # later entries hold what changed, never the whole card again
            assert "cameras" not in change and "address" not in change, change
    assert seen[victim.node_id][-1]["state"] == "offline"
