"""The page's camera settings form and lock-exposure button in headless Chromium, against two
real nodes (synthetic cameras) and a real controller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from support.controllers import ControllerProcess
from support.nodes import NodeProcess
from support.web import controller_process, serving, wait_nodes, wait_until

from pepi_fleet.broker.runner import EmbeddedBroker

pytestmark = pytest.mark.system

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "web"


@pytest.fixture
def controller(broker: EmbeddedBroker, root: str, tmp_path: Path) -> Iterator[ControllerProcess]:
    ctl = controller_process(broker, root, tmp_path)
    with serving(ctl):
        yield ctl


OpenPage = Callable[[list[str]], AbstractContextManager[tuple[httpx.Client, Page]]]


@pytest.fixture
def open_page(
    browser: Browser, start_node: Callable[..., NodeProcess], controller: ControllerProcess
) -> OpenPage:
    """``with open_page(ids) as (api, page)``: those nodes started and online, the page open
    on them with no fleet settings yet; the page and the API client closed after."""

    @contextmanager
    def open_on(ids: list[str]) -> Iterator[tuple[httpx.Client, Page]]:
        for node_id in ids:
            start_node(node_id)
        api = httpx.Client(base_url=controller.url, timeout=30)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        try:
            wait_nodes(api, set(ids))
            page.goto(controller.url + "/", wait_until="domcontentloaded")
            expect(page.locator("#fleet-settings")).to_have_text("none")
            yield api, page
        finally:
            page.context.close()
            api.close()

    return open_on


def controls(api: httpx.Client, node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/api/nodes/{node_id}").json()["cameras"][0]["controls"]
    return found


def test_web_settings_form_applies_to_the_fleet_and_lock_copies_the_reference(
    open_page: OpenPage,
) -> None:
    ids = ["page-a", "page-b"]
    with open_page(ids) as (api, page):
        expect(page.locator("#settings-node option")).to_have_count(3)  # fleet + two nodes

        # an inconsistent entry is refused with the server's reason, nothing sent
        page.locator("#settings-awb").select_option("fixed")
        page.locator("#settings-red").fill("2")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#settings-msg")).to_contain_text("needs a red and a blue gain")

        page.locator("#settings-exposure").fill("8000")
        page.locator("#settings-blue").fill("1.5")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#settings-msg")).to_have_text("applied to the fleet")
        expect(page.locator("#fleet-settings")).to_contain_text('"exposure_time_us":8000')
        for node_id in ids:
            wait_until(
                lambda n=node_id: (
                    controls(api, n)["colour_gains"] == [2.0, 1.5]
                    and controls(api, n)["exposure_time_us"] == 8000
                ),
                20,
                f"{node_id} applying the form",
            )

        page.locator("#settings-exposure").fill("-5")
        page.locator("#settings-awb").select_option("")
        page.locator("#settings-exposure").evaluate("e => e.removeAttribute('min')")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#settings-msg")).to_contain_text("exposure_time_us")

        # one node only: back to automatic exposure on page-b
        page.locator("#settings-node").select_option("page-b")
        page.locator("#settings-exposure").fill("0")
        page.locator("#settings-awb").select_option("auto")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#settings-msg")).to_have_text("sent to page-b")
        reference = wait_until(
            lambda: (
                (c := controls(api, "page-b"))["auto_exposure"] and c["auto_white_balance"] and c
            ),
            20,
            "page-b on auto",
        )

        page.locator("#lock-reference").fill("page-b:0")
        page.get_by_role("button", name="Lock exposure").click()
        expect(page.locator("#settings-msg")).to_have_text("locked to page-b:0", timeout=20_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "page-settings.png"), full_page=True)
        expect(page.locator("#fleet-settings")).to_contain_text(
            f'"exposure_time_us":{reference["exposure_time_us"]}'
        )
        for node_id in ids:
            wait_until(
                lambda n=node_id: (
                    controls(api, n)["exposure_time_us"] == reference["exposure_time_us"]
                    and controls(api, n)["colour_gains"] == reference["colour_gains"]
                ),
                20,
                f"{node_id} locked to page-b",
            )


def test_web_cards_show_applied_exposure_and_fleet_line_follows_the_event_stream(
    open_page: OpenPage,
) -> None:
    ids = ["card-a", "card-b"]
    with open_page(ids) as (api, page):
        exposure = page.locator("#node-card-a [data-field=exposure]")
        expect(exposure).to_contain_text("auto \u00b7 gain")  # the camera's own choice
        expect(exposure).to_contain_text("WB auto")

        # changed elsewhere (the API, not this page's form): the page follows without a reload
        change = {"exposure_time_us": 8000, "analogue_gain": 2.0, "colour_gains": [1.9, 1.6]}
        assert api.put("/api/settings", json=change).status_code == 200
        expect(page.locator("#fleet-settings")).to_contain_text('"exposure_time_us":8000')
        line = "cam0 1/125 s \u00b7 gain 2.0 \u00b7 WB manual 1.9/1.6"
        for node_id in ids:
            expect(page.locator(f"#node-{node_id} [data-field=exposure]")).to_have_text(line)
        expect(page.locator("#node-card-b")).to_have_attribute("title", f"card-b: online\n{line}")

        # a second change while already manual reaches the cards at once too
        assert api.put("/api/settings", json={"exposure_time_us": 4000}).status_code == 200
        expect(page.locator("#fleet-settings")).to_contain_text('"exposure_time_us":4000')
        expect(exposure).to_have_text("cam0 1/250 s \u00b7 gain 2.0 \u00b7 WB manual 1.9/1.6")

        assert api.post("/api/settings/clear", json={}).status_code == 200
        expect(page.locator("#fleet-settings")).to_have_text("none")
