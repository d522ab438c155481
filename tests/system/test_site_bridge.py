"""Two sites: the controller on the central mosquitto, nodes on a site mosquitto bridged to it.

Both brokers run from the files ``pepi broker init --site`` writes (the shipped drop-ins and
the site's bridge, only paths and ports moved to loopback), with TLS and the generated
logins and ACLs. The bridge goes through a loopback TCP proxy so the test can cut it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.conf_broker import ConfBroker
from support.controllers import ControllerProcess, wait_summary
from support.debian_broker import broker_binary
from support.mqtt_watch import Watcher
from support.nodes import NodeProcess
from support.tcp_proxy import TcpProxy
from support.web import wait_set_downloaded

from pepi_fleet.broker.bridge import SiteSpec
from pepi_fleet.broker.init import init_broker_dir
from pepi_fleet.broker.runner import Credentials, free_port
from pepi_fleet.controller.manifest import MANIFEST_FILE, Manifest
from pepi_fleet.schemas.controller import CaptureSetSummary

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto not found: apt-get install mosquitto",
)

ROOT = "pepi/v1"
CENTRAL_NODES = ("cam01",)
SITE = "north"
SITE_NODES = ("cam05", "cam06")
LEARNS_SITE = "cam06"
"""Started without --site: it learns its site from its broker's bridge state."""


@dataclass
class Rig:
    secrets: Path
    central: ConfBroker
    site: ConfBroker
    bridge_link: TcpProxy
    controller: ControllerProcess
    nodes: dict[str, NodeProcess]
    watcher: Watcher

    def login(self, user: str) -> Credentials:
        return Credentials(user, (self.secrets / "logins" / user / "password").read_text().strip())


def node(rig_dir: Path, base: Path, node_id: str, tls_port: int, site: str | None) -> NodeProcess:
    """A node on a broker's TLS listener with the login ``pepi broker init`` made for it."""
    login = rig_dir / "logins" / node_id
    thrift_port, stream_port = free_port(), free_port()
    args = [
        *("--broker", f"mqtts://127.0.0.1:{tls_port}", "--ca-file", str(login / "ca.crt")),
        *("--node-id", node_id, "--topic-root", ROOT, "--data-dir", str(base / node_id)),
        *("--thrift-host", "127.0.0.1", "--thrift-port", str(thrift_port)),
        *("--stream-port", str(stream_port), "--resolution", "640x480", "--heartbeat", "1"),
        *(("--site", site) if site else ()),
    ]
    creds = Credentials(node_id, (login / "password").read_text().strip())
    return NodeProcess(
        args,
        creds,
        base / f"{node_id}.log",
        node_id=node_id,
        data_dir=base / node_id,
        thrift_port=thrift_port,
        stream_port=stream_port,
    )


@pytest.fixture(params=["2.0", "2.1"])
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Central and site broker of one mosquitto version (Debian's 2.0, or 2.1)."""
    binary = broker_binary(request.param)
    secrets = tmp_path / "rig-secrets"
    central = ConfBroker(secrets / "broker", tmp_path / "central", binary=binary)
    proxy_port = free_port()
    init_broker_dir(
        secrets,
        CENTRAL_NODES,
        ["127.0.0.1"],
        ROOT,
        sites=[SiteSpec(SITE, SITE_NODES, ("127.0.0.1",))],
        central_address=f"127.0.0.1:{proxy_port}",
    )
    site = ConfBroker(secrets / "sites" / SITE / "broker", tmp_path / SITE, binary=binary)
    central.start()
    bridge_link = TcpProxy(proxy_port, central.tls_port).start()
    controller: ControllerProcess | None = None
    nodes: dict[str, NodeProcess] = {}
    watcher: Watcher | None = None
    try:
        site.start()
        login = (secrets / "logins" / "controller" / "password").read_text().strip()
        creds = Credentials("controller", login)
        web_port = free_port()
        controller = ControllerProcess(
            [
                *("--broker", f"mqtt://127.0.0.1:{central.plain_port}", "--username", "controller"),
                *("--topic-root", ROOT, "--data-dir", str(tmp_path / "controller-data")),
                *("--web-port", str(web_port), "--set-timeout", "20"),
            ],
            creds,
            tmp_path / "controller.log",
            broker_url=f"mqtt://127.0.0.1:{central.plain_port}",
            root=ROOT,
            data_dir=tmp_path / "controller-data",
            web_port=web_port,
        )
        controller.start()
        for node_id in CENTRAL_NODES:
            nodes[node_id] = node(secrets, tmp_path, node_id, central.tls_port, None).start()
        for node_id in SITE_NODES:
            given = None if node_id == LEARNS_SITE else SITE
            nodes[node_id] = node(secrets, tmp_path, node_id, site.tls_port, given).start()
        automation = (secrets / "logins" / "automation" / "password").read_text().strip()
        watcher = Watcher(central.plain_port, [f"{ROOT}/#"], "automation", automation)
        yield Rig(secrets, central, site, bridge_link, controller, nodes, watcher)
    finally:
        if watcher is not None:
            watcher.close()
        for proc in nodes.values():
            proc.stop()
        if controller is not None:
            controller.stop()
        site.stop()
        bridge_link.close()
        central.stop()


def states(nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {node_id: n["state"] for node_id, n in nodes.items()}


def every(state: str, ids: tuple[str, ...], others: str = "online") -> dict[str, str]:
    wanted = dict.fromkeys(CENTRAL_NODES + SITE_NODES, others)
    wanted.update(dict.fromkeys(ids, state))
    return wanted


def bridge_state(rig: Rig) -> dict[str, bool]:
    """The controller's view of each site's bridge (``GET /api/nodes``)."""
    res = httpx.get(f"{rig.controller.url}/api/nodes", timeout=5)
    sites: dict[str, bool] = res.json()["sites"]
    return sites


def test_site_bridge_presence_capture_cut_and_restore(rig: Rig) -> None:
    ctl = rig.controller
    everyone = CENTRAL_NODES + SITE_NODES
    # presence across the bridge, and clock probes answered through it
    nodes = ctl.wait_nodes(
        lambda n: (
            states(n) == every("online", everyone)
            and all(n[i]["clock_rtt_s"] is not None for i in everyone)
            and n[LEARNS_SITE]["site"] is not None
        ),
        "every node online with a measured clock, cam06 with a site",
        timeout=60,
    )
    # cam06, started without --site, learnt it from its broker; cam01 on the central broker
    # (whose ACL keeps the sites' bridge states from nodes) has none
    assert {i: nodes[i]["site"] for i in everyone} == {"cam01": None, "cam05": SITE, "cam06": SITE}
    assert bridge_state(rig) == {SITE: True}
    # a node without a site publishes the status controllers before sites read
    cam01 = rig.watcher.wait_topic(f"{ROOT}/nodes/cam01/status").payload
    cam05 = rig.watcher.wait_topic(f"{ROOT}/nodes/cam05/status").payload
    assert b'"site"' not in cam01 and b'"site":"north"' in cam05

    # the broadcast trigger reaches both brokers; images come back over Thrift (with the
    # secrets the site's nodes published through the bridge)
    client = httpx.Client(base_url=ctl.url, timeout=10)
    accepted = client.post("/api/captures", json={"capture_id": "bridged-1"})
    assert accepted.status_code == 202, accepted.text
    body = wait_set_downloaded(client, "bridged-1", images=3, timeout=60)
    assert sorted(body["expected"]) == sorted(everyone)
    for node_id in everyone:
        image = ctl.data_dir / "bridged-1" / f"id{node_id}_dbridged-1_cam0.jpeg"
        assert image.read_bytes()[:2] == b"\xff\xd8", node_id

    # cut the bridge: the site's nodes are unreachable at once, the central node is not
    rig.bridge_link.cut()
    ctl.wait_nodes(
        lambda n: states(n) == every("unreachable", SITE_NODES), "site nodes unreachable", 30
    )
    assert bridge_state(rig) == {SITE: False}
    # and they stay so past their staleness (3 heartbeats of 1 s), not stale
    time.sleep(4)
    assert states(ctl.api_nodes() or {}) == every("unreachable", SITE_NODES)

    # a capture meanwhile expects only the reachable node and names the site cut off,
    # apart from nodes that are merely missing
    began = time.time()
    accepted = client.post("/api/captures", json={"capture_id": "during-cut"})
    assert accepted.status_code == 202, accepted.text
    summary: CaptureSetSummary = wait_summary(rig.watcher, ROOT, "during-cut", 30, began)
    assert summary.expected == list(CENTRAL_NODES)
    assert summary.missing == []
    assert summary.unreachable == {SITE: list(SITE_NODES)}
    assert not summary.complete
    assert f"site {SITE} was cut off (its bridge was down): cam05, cam06 not triggered" in (
        summary.problems
    )
    # not held back by the set timeout (20 s) for nodes that cannot answer
    assert summary.completed_at - summary.triggered_at < 10
    # kept with the set: the API, the set view and the manifest say so too
    listed = client.get("/api/captures").json()["items"]
    assert {s["capture_id"]: s["unreachable"] for s in listed}["during-cut"] == {
        SITE: list(SITE_NODES)
    }
    assert client.get("/api/captures/during-cut").json()["state"] == "incomplete"
    assert f"site {SITE} cut off" in client.get("/sets/during-cut").text
    # the manifest is written before the summary that says the images are in
    wait_summary(rig.watcher, ROOT, "during-cut", 30, began, downloaded=True)
    manifest = Manifest.model_validate_json(
        (ctl.data_dir / "during-cut" / MANIFEST_FILE).read_text()
    )
    assert manifest.unreachable == {SITE: list(SITE_NODES)} and manifest.missing == []

    # restore: the bridge reconnects, the site's state flows again, the nodes are back
    rig.bridge_link.restore()
    ctl.wait_nodes(lambda n: states(n) == every("online", everyone), "site nodes back", 90)
    assert bridge_state(rig) == {SITE: True}
    accepted = client.post("/api/captures", json={"capture_id": "after-cut"})
    assert accepted.status_code == 202, accepted.text
    wait_set_downloaded(client, "after-cut", images=3, timeout=60)
    client.close()


def test_central_acl_confines_a_site_bridge_login(tmp_path: Path) -> None:
    """A site's bridge login writes only its own nodes' topics and its bridge state, and
    reads only their commands: a compromised site broker cannot speak for another site."""
    secrets = tmp_path / "rig-secrets"
    north = SiteSpec(SITE, ("cam05",), ("127.0.0.1",))
    init_broker_dir(secrets, ["cam01"], ["127.0.0.1"], ROOT, sites=[north])
    central = ConfBroker(secrets / "broker", tmp_path / "central").start()
    watchers: list[Watcher] = []
    try:

        def login(user: str, *filters: str) -> Watcher:
            pw = (secrets / "logins" / user / "password").read_text().strip()
            watchers.append(Watcher(central.plain_port, list(filters), user, pw))
            return watchers[-1]

        everything = login("automation", f"{ROOT}/#")
        bridge = login(f"bridge-{SITE}", f"{ROOT}/nodes/+/capture", f"{ROOT}/capture")
        bridge.publish(f"{ROOT}/nodes/cam01/status", b"forged", retain=True)
        bridge.publish(f"{ROOT}/sites/south/bridge", b"0", retain=True)
        bridge.publish(f"{ROOT}/capture", b"not-from-a-bridge")
        bridge.publish(f"{ROOT}/sites/{SITE}/bridge", b"1", retain=True)
        bridge.publish(f"{ROOT}/nodes/cam05/status", b"ok", retain=True)
        everything.wait_topic(f"{ROOT}/nodes/cam05/status", b"ok")
        heard = {(s.topic, s.payload) for s in everything.messages}
        assert heard == {
            (f"{ROOT}/sites/{SITE}/bridge", b"1"),
            (f"{ROOT}/nodes/cam05/status", b"ok"),
        }

        everything.publish(f"{ROOT}/nodes/cam01/capture", b"for-cam01")
        everything.publish(f"{ROOT}/nodes/cam05/capture", b"for-cam05")
        everything.publish(f"{ROOT}/capture", b"everyone")
        bridge.wait_topic(f"{ROOT}/capture", b"everyone")
        assert [s.payload for s in bridge.messages] == [b"for-cam05", b"everyone"]
    finally:
        for watcher in watchers:
            watcher.close()
        central.stop()
