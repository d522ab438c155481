"""A real Home Assistant core for tests: its own venv (newer Python), a temp config, loopback only.

``./run.sh test`` installs it (``ha_python()`` says where); the test drives it as a user does:
onboarding creates the owner, the MQTT config flow points it at the test's mosquitto, and
the REST API lists states and presses buttons.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pepi_fleet.broker.runner import free_port

HA_VENV_DEFAULT = Path.home() / ".cache" / "pepi-fleet" / "ha-venv"

CONFIG = """\
homeassistant:
  name: pepi-test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
"""


def ha_python() -> Path:
    """The Python of the Home Assistant venv (``PEPI_HA_VENV`` or ~/.cache/pepi-fleet/ha-venv)."""
    return Path(os.environ.get("PEPI_HA_VENV", str(HA_VENV_DEFAULT))) / "bin" / "python"


@dataclass
class HomeAssistant:
    """One ``python -m homeassistant`` on loopback with a fresh config dir."""

    config_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.config_dir / "ha.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 120.0) -> HomeAssistant:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIG.format(port=self.port))
        with (self.config_dir / "ha.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [str(ha_python()), "-m", "homeassistant", "--config", str(self.config_dir),
                 "--skip-pip"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._wait(lambda: self._get("/api/onboarding", auth=False) is not None, timeout, "HTTP")
        return self

    def onboard(self) -> str:
        """Create the owner as the first-run page does; keep an access token."""
        client_id = self.url + "/"
        res = httpx.post(
            f"{self.url}/api/onboarding/users",
            json={"client_id": client_id, "name": "Test", "username": "test",
                  "password": "test-pass-123", "language": "en"},
            timeout=30,
        )  # fmt: skip
        res.raise_for_status()
        tokens = httpx.post(
            f"{self.url}/auth/token",
            data={"grant_type": "authorization_code", "code": res.json()["auth_code"],
                  "client_id": client_id},
            timeout=30,
        )  # fmt: skip
        tokens.raise_for_status()
        self.token = str(tokens.json()["access_token"])
        return self.token

    def add_mqtt(self, port: int, username: str, password: str) -> dict[str, Any]:
        """The MQTT integration's config flow, as a user fills it in."""
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        step = self.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": port, "username": username, "password": password},
        )
        if step.get("type") != "create_entry":
            raise AssertionError(f"MQTT config flow did not finish: {step}\n{self.log()[-3000:]}")
        return step

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state, by entity id."""
        body = self._get("/api/states")
        return {s["entity_id"]: s for s in body or []}

    def press(self, entity_id: str) -> None:
        self.post("/api/services/button/press", {"entity_id": entity_id})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        res = httpx.post(f"{self.url}{path}", json=body, headers=self._headers(), timeout=30)
        if res.status_code >= 400:
            raise AssertionError(f"POST {path}: {res.status_code} {res.text}")
        return res.json()

    def wait_states(self, check: Any, timeout: float, what: str) -> dict[str, dict[str, Any]]:
        """Until ``check(states)`` is truthy; the states then."""
        found: dict[str, dict[str, Any]] = {}

        def ready() -> bool:
            nonlocal found
            found = self.states()
            return bool(check(found))

        self._wait(ready, timeout, what)
        return found

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _get(self, path: str, auth: bool = True) -> Any:
        try:
            res = httpx.get(
                f"{self.url}{path}", headers=self._headers() if auth else {}, timeout=10
            )
        except httpx.HTTPError:
            return None
        return res.json() if res.status_code == 200 else None

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"Home Assistant exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Home Assistant: no {what} in {timeout} s\n{self.log()[-3000:]}"
                )
            time.sleep(0.5)
