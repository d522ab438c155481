"""``/api/settings`` of a real ``pepi controller`` with real nodes on the synthetic camera:
fleet and node settings, the lock action (REST and the MQTT controller command), bad input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import StartNode
from support.controllers import StartController, controller_credentials
from support.mqtt_watch import Watcher
from support.pub import mosquitto_pub
from support.web import event_stream, wait_nodes, wait_until

from pepi_fleet.broker.runner import EmbeddedBroker

NODES = ("rest-a", "rest-b")


@pytest.fixture
def api(start_node: StartNode, start_controller: StartController) -> Iterator[httpx.Client]:
    for node in NODES:
        start_node(node)
    ctl = start_controller()
    with httpx.Client(base_url=ctl.url, timeout=30) as client:
        wait_nodes(client, set(NODES))
        yield client


def camera_of(client: httpx.Client, node_id: str) -> dict[str, Any]:
    camera: dict[str, Any] = client.get(f"/api/nodes/{node_id}").json()["cameras"][0]
    return camera


def controls_of(client: httpx.Client, node_id: str) -> dict[str, Any]:
    controls: dict[str, Any] = camera_of(client, node_id)["controls"]
    return controls


def wait_controls(client: httpx.Client, node_id: str, **expected: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        controls = controls_of(client, node_id)
        return controls if all(controls[k] == v for k, v in expected.items()) else None

    return wait_until(check, 20, f"{node_id} applying {expected}")


def fleet_events(api: httpx.Client, change: Callable[[], None], count: int) -> list[Any]:
    """The fleet settings of the first ``count`` settings events after ``change()``, which
    runs once the event stream said hello (so no event can be missed)."""
    fleets = []
    with event_stream(str(api.base_url)) as events:
        for kind, data in events:
            if kind == "hello":
                change()
            elif kind == "settings":
                fleets.append(data["fleet"])
                if len(fleets) == count:
                    break
    return fleets


def test_api_fleet_settings_are_merged_retained_and_applied(api: httpx.Client) -> None:
    assert api.get("/api/settings").json() == {"fleet": {}}
    res = api.put("/api/settings", json={"exposure_time_us": 9000, "analogue_gain": 1.5})
    assert res.status_code == 200, res.text
    res = api.put("/api/settings", json={"colour_gains": [2.0, 1.25], "jpeg_quality": 70})
    fleet = res.json()["fleet"]
    assert fleet == {
        "exposure_time_us": 9000,
        "analogue_gain": 1.5,
        "colour_gains": [2.0, 1.25],
        "jpeg_quality": 70,
    }
    assert api.get("/api/settings").json()["fleet"] == fleet
    for node in NODES:
        wait_controls(api, node, exposure_time_us=9000, analogue_gain=1.5, colour_gains=[2.0, 1.25])
        wait_until(
            lambda n=node: api.get(f"/api/nodes/{n}").json()["jpeg_quality"] == 70, 20, "quality"
        )
    # back to automatic white balance: the fixed gains leave the fleet settings
    fleet = api.put("/api/settings", json={"awb_mode": "auto"}).json()["fleet"]
    assert "colour_gains" not in fleet and fleet["awb_mode"] == "auto"
    for node in NODES:
        wait_controls(api, node, auto_white_balance=True)
    assert api.post("/api/settings/clear", json={}).json() == {"fleet": {}}
    assert api.get("/api/settings").json() == {"fleet": {}}


def test_api_node_settings_reach_that_node(api: httpx.Client) -> None:
    before = controls_of(api, "rest-b")
    res = api.put("/api/nodes/rest-a/settings", json={"exposure_time_us": 4000})
    assert res.status_code == 200, res.text
    assert res.json() == {"node_id": "rest-a", "sent": {"exposure_time_us": 4000}}
    wait_controls(api, "rest-a", exposure_time_us=4000, auto_exposure=False)
    assert controls_of(api, "rest-b")["exposure_time_us"] == before["exposure_time_us"]
    assert api.get("/api/settings").json() == {"fleet": {}}
    missing = api.put("/api/nodes/nobody/settings", json={"exposure_time_us": 4000})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"exposure_time_us": -1}, "exposure_time_us: Input should be greater than or equal"),
        ({"awb_mode": "auto", "colour_gains": [2, 1]}, "not both"),
        ({"awb_mode": "sunset"}, "awb_mode"),
        ({"jpeg_quality": True}, "jpeg_quality"),
        ({"shutter": 5}, "shutter: unknown field"),
        ({"lens_position": 2, "af_mode": "continuous"}, "needs af_mode 'manual'"),
    ],
)
def test_api_settings_refuses_bad_values_and_sends_nothing(
    api: httpx.Client, body: dict[str, Any], message: str
) -> None:
    res = api.put("/api/settings", json=body)
    assert res.status_code == 422, res.text
    assert message in res.json()["detail"]
    assert api.get("/api/settings").json() == {"fleet": {}}


def test_api_settings_changes_need_same_origin_json(api: httpx.Client) -> None:
    form = api.put(
        "/api/settings", content=b"exposure_time_us=5", headers={"Content-Type": "text/plain"}
    )
    assert form.status_code == 415
    evil = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    res = api.post("/api/settings/lock", content=b"{}", headers=evil)
    assert res.status_code == 403
    assert api.get("/api/settings").json() == {"fleet": {}}


def test_api_lock_copies_the_reference_to_every_node(api: httpx.Client) -> None:
    reference = controls_of(api, "rest-b")
    assert reference["exposure_time_us"] != controls_of(api, "rest-a")["exposure_time_us"]
    res = api.post("/api/settings/lock", json={"reference": "rest-b:0", "settle_s": 0.2})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["reference"] == "rest-b:0"
    locked = {k: reference[k] for k in ("exposure_time_us", "analogue_gain", "colour_gains")}
    assert body["fleet"] == locked
    for node in NODES:
        wait_controls(api, node, auto_exposure=False, auto_white_balance=False, **locked)


def test_api_lock_refuses_a_camera_the_reference_lacks(api: httpx.Client) -> None:
    res = api.post("/api/settings/lock", json={"reference": "rest-a:3", "settle_s": 0})
    assert res.status_code == 409
    assert "camera 3 does not exist" in res.json()["detail"]
    assert api.get("/api/settings").json() == {"fleet": {}}
    bad = api.post("/api/settings/lock", json={"reference": "REST A"})
    assert bad.status_code == 422


def test_controller_command_lock_exposure_over_mqtt(
    broker: EmbeddedBroker, root: str, watcher: Watcher, api: httpx.Client
) -> None:
    reference = controls_of(api, "rest-a")
    creds = controller_credentials(broker)
    began = time.time()
    command = {"action": "lock_exposure", "reference": "rest-a"}
    mosquitto_pub(
        broker.port,
        f"{root}/controller/command",
        json.dumps(command),
        username=creds.username,
        password=creds.password,
    )
    seen = watcher.wait_topic(f"{root}/settings", after=began, timeout=20)
    assert json.loads(seen.payload)["exposure_time_us"] == reference["exposure_time_us"]
    late = Watcher(broker.port, [f"{root}/settings"])  # retained: a newcomer gets it too
    try:
        assert late.wait_for(lambda s: s.retain).payload == seen.payload
    finally:
        late.close()
    wait_controls(api, "rest-b", exposure_time_us=reference["exposure_time_us"])


def test_api_fleet_setting_changes_are_events(api: httpx.Client) -> None:
    def change() -> None:
        assert api.put("/api/settings", json={"jpeg_quality": 75}).status_code == 200
        assert api.post("/api/settings/clear", json={}).status_code == 200

    assert fleet_events(api, change, 2) == [{"jpeg_quality": 75}, {}]


def test_fleet_settings_written_past_the_controller_are_events(
    broker: EmbeddedBroker, root: str, api: httpx.Client
) -> None:
    """``pepi settings`` and automations write the retained fleet settings on the broker
    directly: the page hears of it from the controller's event stream all the same."""
    creds = controller_credentials(broker)

    def change() -> None:
        mosquitto_pub(
            broker.port,
            f"{root}/settings",
            json.dumps({"jpeg_quality": 61}),
            "-r",
            username=creds.username,
            password=creds.password,
        )

    assert fleet_events(api, change, 1) == [{"jpeg_quality": 61}]
    assert api.get("/api/settings").json() == {"fleet": {"jpeg_quality": 61}}
