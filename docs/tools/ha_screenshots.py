"""Screenshots of the rig in a real Home Assistant for the README (docs/ha-*.png).

    .venv/bin/python docs/tools/ha_screenshots.py

Starts a loopback mosquitto, two synthetic nodes, a controller and the test suite's Home
Assistant (``./run.sh setup`` installs it), completes Home Assistant's onboarding, takes one
capture, and saves the controller's and a node's device pages from headless Chromium.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from support import controllers  # noqa: E402
from support.home_assistant import HomeAssistant  # noqa: E402
from support.nodes import node_process  # noqa: E402

from pepi_fleet.broker.runner import EmbeddedBroker  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def finish_onboarding(ha: HomeAssistant) -> None:
    """The steps after the owner, so the frontend opens the dashboard, not the wizard."""
    ha.post("/api/onboarding/core_config", {})
    ha.post("/api/onboarding/analytics", {})
    home = ha.url + "/"
    ha.post("/api/onboarding/integration", {"client_id": home, "redirect_uri": home})


def device_id(ha: HomeAssistant, entity: str) -> str:
    res = httpx.post(
        f"{ha.url}/api/template",
        json={"template": f"{{{{ device_id('{entity}') }}}}"},
        headers={"Authorization": f"Bearer {ha.token}"},
        timeout=10,
    )
    res.raise_for_status()
    return res.text.strip()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pepi-ha-shots-") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "broker").mkdir()
        broker = EmbeddedBroker(root="pepi/v1", workdir=tmp / "broker")
        auto = broker.add_user("automation")
        broker.add_user("controller")
        broker.start()
        nodes = [node_process(broker, "pepi/v1", n, tmp).start() for n in ("cam01", "cam02")]
        ctl = controllers.controller_process(broker, "pepi/v1", tmp, 3.0, "controller")
        ctl.start()
        ha = HomeAssistant(tmp / "ha")
        try:
            ha.start()
            ha.onboard()
            tokens_raw = ha.token
            finish_onboarding(ha)
            ha.add_mqtt(broker.port, auto.username, auto.password)
            ha.wait_states(
                lambda s: (
                    s.get("button.pepi_controller_capture_all", {}).get("state")
                    not in (None, "unavailable")
                ),
                90,
                "the controller's button",
            )
            ha.press("button.pepi_controller_capture_all")
            time.sleep(8)
            tokens = {
                "access_token": tokens_raw, "token_type": "Bearer", "expires_in": 1800,
                "hassUrl": ha.url, "clientId": ha.url + "/", "refresh_token": "",
                "expires": int(time.time() * 1000) + 1_800_000,
            }  # fmt: skip
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                stored = json.dumps(json.dumps(tokens))
                page.add_init_script(f"localStorage.setItem('hassTokens', {stored});")
                for name, entity in (
                    ("controller", "button.pepi_controller_capture_all"),
                    ("node", "button.pepi_cam01_capture"),
                ):
                    page.goto(f"{ha.url}/config/devices/device/{device_id(ha, entity)}")
                    page.wait_for_timeout(6000)
                    out = REPO / "docs" / f"ha-{name}.png"
                    page.screenshot(path=str(out))
                    print(out)
                browser.close()
        finally:
            ha.stop()
            ctl.stop()
            for node in nodes:
                node.stop()
            broker.close()


if __name__ == "__main__":
    main()
