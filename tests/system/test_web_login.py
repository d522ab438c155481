"""The login page in headless Chromium: a controller that requires a login, one real node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import StartNode
from playwright.sync_api import Browser, Page, expect
from support.controllers import ControllerProcess
from support.web import add_token, add_user, controller_process, serving, wait_nodes

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.web.sessions import SESSION_COOKIE

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "web"
OPERATOR, VIEWER = ("olga", "olga-password-1"), ("vic", "vic-password-1")


@pytest.fixture
def controller(
    broker: EmbeddedBroker, root: str, tmp_path: Path
) -> Iterator[tuple[ControllerProcess, str]]:
    """A controller that requires a login (``--auth on``) and a viewer API token for checks."""
    ctl = controller_process(broker, root, tmp_path, "--auth", "on")
    add_user(ctl.data_dir, OPERATOR[0], "operator", OPERATOR[1])
    add_user(ctl.data_dir, VIEWER[0], "viewer", VIEWER[1])
    token = add_token(ctl.data_dir, "checks", "viewer")
    with serving(ctl, token):
        yield ctl, token


@pytest.fixture
def other_site() -> Iterator[str]:
    """Another web page on this machine (another port: another origin, the same site)."""
    page = b"<!doctype html><title>elsewhere</title><p>a page the operator also visits</p>"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def shot(page: Page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def log_in(page: Page, user: str, password: str) -> None:
    page.locator("#username").fill(user)
    page.locator("#password").fill(password)
    page.get_by_role("button", name="Log in").click()


def set_ids(url: str, token: str) -> set[str]:
    res = httpx.get(f"{url}/api/captures", headers={"Authorization": f"Bearer {token}"})
    return {s["capture_id"] for s in res.json()["items"]}


def test_web_login_page_operator_captures_viewer_looks_other_sites_cannot(
    browser: Browser,
    start_node: StartNode,
    controller: tuple[ControllerProcess, str],
    other_site: str,
) -> None:
    ctl, token = controller
    node = start_node("login1")
    with httpx.Client(
        base_url=ctl.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        wait_nodes(api, {node.node_id})

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(ctl.url + "/", wait_until="domcontentloaded")
        expect(page).to_have_url(f"{ctl.url}/login?next=/")
        shot(page, "login-page.png")
        log_in(page, OPERATOR[0], "not-the-password")
        expect(page.locator("#login-msg")).to_have_text("wrong user name or password")

        log_in(page, *OPERATOR)
        expect(page).to_have_url(f"{ctl.url}/")
        expect(page.locator("#user")).to_have_text(OPERATOR[0])
        expect(page.locator(f"#node-{node.node_id}.state-online")).to_have_count(1)
        cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert SESSION_COOKIE not in page.evaluate("document.cookie")  # no script can read it

        page.get_by_role("button", name="Capture all").click()
        latest = page.locator("#captures .set").first
        expect(latest.locator(".thumbs img")).to_have_count(1, timeout=30_000)
        taken = set_ids(ctl.url, token)
        assert len(taken) == 1

        # Another page the logged-in operator visits tries what the issue reproduced: an
        # empty text/plain POST (no preflight); the cookie even goes along (same site).
        page.goto(other_site)
        page.evaluate(
            """url => fetch(url + "/api/captures", {method: "POST", mode: "no-cors",
                 credentials: "include", headers: {"Content-Type": "text/plain"}, body: ""})""",
            ctl.url,
        )
        page.goto(ctl.url + "/")
        expect(page.locator("#captures .set")).to_have_count(1)
        assert set_ids(ctl.url, token) == taken  # nothing was triggered

        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(f"{ctl.url}/login")
        page.goto(ctl.url + "/")
        expect(page).to_have_url(f"{ctl.url}/login?next=/")

        log_in(page, *VIEWER)
        expect(page).to_have_url(f"{ctl.url}/")
        expect(page.locator("#user")).to_have_text(VIEWER[0])
        expect(page.locator("#captures .set .thumbs img")).to_have_count(1)
        expect(page.get_by_role("button", name="Capture all")).to_be_hidden()
        expect(page.locator(f"#node-{node.node_id} button.capture-node")).to_be_hidden()
        shot(page, "page-viewer.png")
    except Exception:
        shot(page, "login-failure.png")
        raise
    finally:
        context.close()
