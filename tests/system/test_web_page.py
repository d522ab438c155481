"""The controller's web page in headless Chromium against three real nodes and a controller."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from support.controllers import ControllerProcess
from support.nodes import NodeProcess
from support.web import controller_process, serving, wait_nodes

from pepi_fleet.broker.runner import EmbeddedBroker

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "web"
SPREAD = re.compile(r"^\d+\.\d{3} ms$")
# measured over MQTT: the offset and half the probe's round trip
MEASURED_OFFSET = r"^offset [+-]\d+\.\d{3} ms ± \d+\.\d{3} ms"
SYNCED_TEXT = {True: " · synchronised$", False: " · not synchronised$", None: "$"}
# A tolerance no clock probe meets (1 µs), so every scheduled capture must warn.
STRICT_TOLERANCE_MS = "0.001"


@pytest.fixture
def controller(broker: EmbeddedBroker, root: str, tmp_path: Path) -> Iterator[ControllerProcess]:
    """A real ``pepi controller`` with its web page on a free port, warning about any clock."""
    ctl = controller_process(broker, root, tmp_path, "--clock-tolerance-ms", STRICT_TOLERANCE_MS)
    with serving(ctl):
        yield ctl


def shot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_web_page_live_cards_capture_all_zip_and_offline(
    browser: Browser,
    start_node: Callable[..., NodeProcess],
    controller: ControllerProcess,
) -> None:
    nodes: list[NodeProcess] = [start_node(f"web{i}") for i in range(3)]
    with httpx.Client(base_url=controller.url, timeout=10) as api:
        synced = {
            n["node_id"]: n["clock"]["synced"] for n in wait_nodes(api, {n.node_id for n in nodes})
        }

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(controller.url + "/", wait_until="domcontentloaded")
        cards = page.locator("#nodes .node")
        expect(page.locator("#nodes .node.state-online")).to_have_count(3)
        expect(page.locator("#count-online")).to_have_text("3")
        expect(page.locator("#broker")).to_contain_text("connected")
        for node in nodes:
            card = page.locator(f"#node-{node.node_id}")
            expect(card.locator("h3")).to_have_text(f"{node.node_id} @ 127.0.0.1")
            expect(card.locator("[data-field=cameras]")).to_contain_text("640x480")
            # through the controller's relay, over the page's one WebSocket: never the node's
            preview = card.locator("img.preview")
            expect(preview).to_have_attribute("data-key", f"{node.node_id}/0")
            page.wait_for_function("img => img.naturalWidth > 0", arg=preview.element_handle())
            assert preview.get_attribute("src").startswith("blob:")
            # refreshed on heartbeats until the controller has probed the clock; the node's
            # own word on its clock (the OS's NTP state) stays next to the measured offset
            clock = re.compile(MEASURED_OFFSET + SYNCED_TEXT[synced[node.node_id]])
            expect(card.locator("[data-field=clock]")).to_have_text(clock)
        page.evaluate("window.__sameDocument = true")

        capture_all = page.get_by_role("button", name="Capture all")
        page.locator("#delay").fill("1.5")
        capture_all.click()
        scheduled = page.locator("#captures .set").first
        expect(scheduled.locator(".when")).to_contain_text("fires")
        clock_warnings = page.locator("#capture-clock li")
        expect(clock_warnings).to_have_count(3)
        for i, node in enumerate(nodes):
            expect(clock_warnings.nth(i)).to_contain_text(f"{node.node_id}: clock offset")
            expect(clock_warnings.nth(i)).to_contain_text("exceeds 0.001 ms")
        expect(page.locator("#capture-clock")).to_contain_text(
            f"when {scheduled.get_attribute('data-set')} fires"
        )
        shot(page, "page-clock-warnings.png")
        expect(scheduled.locator(".thumbs img")).to_have_count(3, timeout=30_000)
        first = scheduled.get_attribute("data-set")

        page.locator("#delay").fill("0")
        capture_all.click()
        latest = page.locator("#captures .set").first
        expect(latest).not_to_have_attribute("data-set", first or "")
        expect(page.locator("#capture-clock")).to_be_hidden()  # an immediate capture: no schedule
        expect(page.locator("#captures .set")).to_have_count(2)
        expect(latest.locator(".thumbs img")).to_have_count(3, timeout=30_000)
        for img in latest.locator(".thumbs img").element_handles():
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
        expect(latest.locator(".spread b")).to_have_text(SPREAD)
        expect(latest.locator(".parts li.ok")).to_have_count(3)
        expect(page.locator("#last-spread")).to_have_text(SPREAD)

        with page.expect_download() as download:
            latest.locator("a.zip").click()
        with zipfile.ZipFile(download.value.path()) as zf:
            jpegs = [n for n in zf.namelist() if n.endswith(".jpeg")]
            assert len(jpegs) == 3
            for name in jpegs:
                image = Image.open(io.BytesIO(zf.read(name)))
                assert image.format == "JPEG" and image.size == (640, 480)

        # the set view: every camera's image side by side, timed to the set's median
        sets = context.new_page()
        sets.goto(controller.url + latest.locator("a.set-view").get_attribute("href"))
        tiles = sets.locator("#tiles .tile")
        expect(tiles).to_have_count(3)
        expect(sets.locator("#tiles .tile-image img")).to_have_count(3)
        for i, node in enumerate(nodes):
            expect(tiles.nth(i).locator("figcaption b")).to_have_text(f"{node.node_id} cam0")
            expect(tiles.nth(i).locator(".offset")).to_have_text(re.compile(r"^[+-]\d+\.\d{3} ms"))
        expect(sets.locator("#set-summary")).to_contain_text("3/3 cameras")
        shot(sets, "page-set-view.png")
        sets.close()

        # docs/screenshot.png is a copy of this file, refreshed by hand when the page changes
        shot(page, "page-desktop.png")
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
        )
        phone_page = phone.new_page()
        phone_page.goto(controller.url + "/", wait_until="domcontentloaded")
        expect(phone_page.locator("#nodes .node.state-online")).to_have_count(3)
        expect(phone_page.locator("#captures .set .thumbs img")).to_have_count(6)
        # previews and thumbnails load as they scroll into view; looked up afresh each time, as
        # the page may redraw a set's thumbnails (a held element handle would be detached)
        images = phone_page.locator("img.preview, .thumbs img")
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()
            phone_page.wait_for_function(
                "i => { const img = document.querySelectorAll('img.preview, .thumbs img')[i];"
                " return img && img.naturalWidth > 0; }",
                arg=i,
            )
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        shot(phone_page, "page-phone.png")
        phone.close()

        victim = nodes[1]
        # The page stamps the moment the card turns offline (Date.now(), the same wall
        # clock as time.time() here), so the polling of expect() adds nothing to it.
        page.evaluate(
            """id => {
              window.__offlineAt = null;
              const offline = () => document.querySelector(`#node-${id}.state-offline`);
              new MutationObserver(() => {
                if (window.__offlineAt === null && offline()) window.__offlineAt = Date.now();
              }).observe(document.getElementById("nodes"),
                         { subtree: true, childList: true, attributes: true });
            }""",
            victim.node_id,
        )
        killed_at = time.time()
        victim.kill()
        card = page.locator(f"#node-{victim.node_id}")
        expect(card).to_have_class(re.compile(r"\bstate-offline\b"), timeout=5_000)
        # kill -9 closes the node's socket at once, so the broker sends its Last Will now
        took = page.evaluate("window.__offlineAt") / 1000 - killed_at
        assert 0 <= took < 2, f"the card took {took:.2f} s to turn offline"
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        expect(card.locator("[data-field=unreachable]")).to_contain_text("Unreachable")
        expect(card.locator("button.capture-node")).to_be_disabled()
        expect(card.locator("img.preview")).to_have_count(0)
        expect(page.locator("#count-offline")).to_have_text("1")
        expect(page.locator("#count-online")).to_have_text("2")
        expect(cards).to_have_count(3)
        shot(page, "page-node-offline.png")
    except Exception:
        shot(page, "failure.png")
        raise
    finally:
        context.close()
