"""The REST API of a real ``pepi controller`` with real nodes: contract, happy paths, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from PIL import Image
from support.controllers import ControllerProcess
from support.nodes import NodeProcess, node_process
from support.web import (
    controller_process,
    event_stream,
    wait_nodes,
    wait_ready,
    wait_set_downloaded,
    wait_until,
)

from pepi_fleet.broker.runner import EmbeddedBroker, free_port

NODES = ("api-a", "api-b")


@pytest.fixture(scope="module")
def fleet(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControllerProcess, list[NodeProcess]]]:
    """Two real nodes and a real controller on a topic root of this module's own."""
    base = tmp_path_factory.mktemp("api")
    root = f"pepi-t/{uuid.uuid4().hex[:10]}"
    nodes = [node_process(broker, root, n, base) for n in NODES]
    controller = controller_process(broker, root, base)
    try:
        for node in nodes:
            node.start()
        wait_ready(controller.start())
        yield controller, nodes
    finally:
        controller.stop()
        for node in nodes:
            node.stop()


@pytest.fixture
def api(fleet: tuple[ControllerProcess, list[NodeProcess]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet[0].url, timeout=20) as client:
        wait_nodes(client, set(NODES))
        yield client


@pytest.fixture(scope="module")
def captured(fleet: tuple[ControllerProcess, list[NodeProcess]]) -> dict[str, Any]:
    """One capture set taken on every node and fully downloaded."""
    with httpx.Client(base_url=fleet[0].url, timeout=20) as client:
        wait_nodes(client, set(NODES))
        res = client.post("/api/captures", json={"capture_id": "api-set-1"})
        assert res.status_code == 202, res.text
        return wait_set_downloaded(client, "api-set-1", images=len(NODES))


def wait_clocks_measured(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Until the controller has a clock probe round trip for every node; nodes by id."""

    def check() -> dict[str, dict[str, Any]] | None:
        nodes = {n["node_id"]: n for n in client.get("/api/nodes").json()["nodes"]}
        measured = all(
            n["clock_offset_s"] is not None and n["clock_rtt_s"] is not None for n in nodes.values()
        )
        return nodes if measured and set(NODES) <= nodes.keys() else None

    return wait_until(check, 10, "clock offsets measured over MQTT for every node")


def assert_4xx(res: httpx.Response, *codes: int) -> str:
    """A client error with a one-line ``detail``; returns the detail."""
    assert 400 <= res.status_code < 500, f"{res.request.method} {res.request.url}: {res.text}"
    if codes:
        assert res.status_code in codes, res.text
    detail = res.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def test_api_openapi_document_is_valid(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    validate(spec)
    paths = set(spec["paths"])
    assert {
        "/api/nodes",
        "/api/nodes/{node_id}",
        "/api/captures",
        "/api/captures/{capture_id}",
        "/api/captures/{capture_id}/zip",
        "/api/captures/{capture_id}/files/{name}",
        "/api/captures/{capture_id}/files/{name}/thumbnail",
        "/api/events",
    } <= paths
    assert "CaptureRequest" in spec["components"]["schemas"]
    assert not any(p.startswith("/ui") or p == "/" for p in paths)


def test_api_nodes_lists_state_address_cameras_store(
    api: httpx.Client, fleet: tuple[ControllerProcess, list[NodeProcess]]
) -> None:
    body = api.get("/api/nodes").json()
    assert body["broker_connected"] is True
    assert body["counts"]["online"] == len(NODES)
    by_id = {n["node_id"]: n for n in body["nodes"]}
    for node in fleet[1]:
        got = by_id[node.node_id]
        assert got["state"] == "online"
        assert got["address"] == f"127.0.0.1:{node.thrift_port}"
        assert got["cameras"][0]["resolution"] == [640, 480]
        assert got["stream_urls"] == [f"http://127.0.0.1:{node.stream_port}/stream/0.mjpeg"]
        assert got["store"]["free_bytes"] > 0
        assert got["heartbeat_age_s"] < 5
    for node_id, got in wait_clocks_measured(api).items():
        # every process on one machine shares one clock: only the probe's error is left
        assert abs(got["clock_offset_s"]) < 0.05, (node_id, got["clock_offset_s"])
        assert got["clock_rtt_s"] > 0, (node_id, got["clock_rtt_s"])
    one = api.get(f"/api/nodes/{NODES[0]}").json()
    assert one["node_id"] == NODES[0] and one["state"] == "online"


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/api/nodes/ghost", (404,)),
        ("/api/nodes/Bad_Id", (422,)),
        ("/api/nodes/..x", (422,)),
        ("/api/nodes/%2E%2E%2Fx", (400,)),
        ("/api/nodes/..%2F..%2Fetc%2Fpasswd", (400,)),
        ("/api/nodes/" + "a" * 40, (422,)),
        ("/api/nodes/%00", (422,)),
    ],
)
def test_api_node_unknown_or_unsafe_is_4xx(
    api: httpx.Client, path: str, codes: tuple[int, ...]
) -> None:
    assert_4xx(api.get(path), *codes)


def test_api_capture_all_gives_set_results_spread_files_and_zip(
    api: httpx.Client, captured: dict[str, Any]
) -> None:
    assert captured["expected"] == sorted(NODES)
    assert [r["status"] for r in captured["results"]] == ["ok"] * len(NODES)
    assert captured["spread_s"] is not None and captured["spread_s"] >= 0
    listed = api.get("/api/captures", params={"limit": 5}).json()
    assert "api-set-1" in [s["capture_id"] for s in listed["items"]]
    for f in captured["files"]:
        assert f["name"] == f"id{f['node_id']}_dapi-set-1_cam0.jpeg"
        blob = api.get(f["url"])
        assert blob.status_code == 200 and blob.headers["content-type"] == "image/jpeg"
        assert hashlib.sha256(blob.content).hexdigest() == f["sha256"]
        thumb = api.get(f["thumbnail_url"], params={"width": 160})
        assert Image.open(io.BytesIO(thumb.content)).size == (160, 120)
    manifest = api.get("/api/captures/api-set-1/files/manifest.json").json()
    assert manifest["capture_id"] == "api-set-1"
    with api.stream("GET", captured["zip_url"]) as res:
        assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
        data = res.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        jpegs = [n for n in names if n.endswith(".jpeg")]
        assert len(jpegs) == len(NODES) and "api-set-1/manifest.json" in names
        for name in jpegs:
            assert Image.open(io.BytesIO(zf.read(name))).format == "JPEG"


def test_api_capture_one_node_scheduled(api: httpx.Client) -> None:
    before = time.time()
    res = api.post("/api/captures", json={"node_id": NODES[1], "delay": 0.5})
    assert res.status_code == 202, res.text
    accepted = res.json()
    assert accepted["node_id"] == NODES[1] and accepted["at"] >= before + 0.5
    body = wait_set_downloaded(api, accepted["capture_id"], images=1)
    assert body["target_node"] == NODES[1] and body["expected"] == [NODES[1]]
    assert body["at"] == pytest.approx(accepted["at"])


def test_api_scheduled_capture_warns_about_clocks_before_it_fires(api: httpx.Client) -> None:
    wait_clocks_measured(api)
    immediate = api.post("/api/captures", json={})
    assert immediate.status_code == 202 and immediate.json()["clock_warnings"] == []
    in_sync = api.post("/api/captures", json={"delay": 0.5, "tolerance_ms": 1000})
    assert in_sync.status_code == 202, in_sync.text
    assert in_sync.json()["clock_warnings"] == []
    # a tolerance no clock probe can meet: every expected node is named, and only those
    strict = api.post(
        "/api/captures", json={"node_id": NODES[0], "delay": 0.5, "tolerance_ms": 0.001}
    )
    assert strict.status_code == 202, strict.text
    [warning] = strict.json()["clock_warnings"]
    assert warning.startswith(f"{NODES[0]}: clock offset ") and warning.endswith("exceeds 0.001 ms")
    everyone = api.post("/api/captures", json={"at": time.time() + 0.5, "tolerance_ms": 0.001})
    assert everyone.status_code == 202, everyone.text
    warnings = everyone.json()["clock_warnings"]
    assert [w.split(":")[0] for w in warnings] == sorted(NODES), warnings
    for res, images in ((immediate, 2), (in_sync, 2), (strict, 1), (everyone, 2)):
        wait_set_downloaded(api, res.json()["capture_id"], images=images)


def set_known(client: httpx.Client, capture_id: str) -> bool:
    return client.get(f"/api/captures/{capture_id}").status_code == 200


def test_api_capture_list_pages_newest_first(api: httpx.Client) -> None:
    ids = ["page-1", "page-2", "page-3"]
    for capture_id in ids:  # one after the other: each set opens before the next trigger
        res = api.post("/api/captures", json={"capture_id": capture_id})
        assert res.status_code == 202, res.text
        wait_until(partial(set_known, api, capture_id), 10, f"capture set {capture_id} opened")
    first = api.get("/api/captures", params={"limit": 2}).json()
    assert [s["capture_id"] for s in first["items"]] == ["page-3", "page-2"]
    assert first["items"][0]["triggered_at"] > first["items"][1]["triggered_at"]
    assert (first["limit"], first["offset"], first["next_offset"]) == (2, 0, 2)
    second = api.get("/api/captures", params={"limit": 2, "offset": first["next_offset"]}).json()
    assert second["items"][0]["capture_id"] == "page-1"
    assert second["items"][0]["triggered_at"] < first["items"][1]["triggered_at"]
    assert second["offset"] == 2
    everything = api.get("/api/captures", params={"limit": 200}).json()
    assert everything["next_offset"] is None
    listed = [s["capture_id"] for s in everything["items"]]
    assert listed[:3] == ["page-3", "page-2", "page-1"] and len(set(listed)) == len(listed)


def test_api_capture_id_already_used_is_409(api: httpx.Client, captured: dict[str, Any]) -> None:
    detail = assert_4xx(api.post("/api/captures", json={"capture_id": "api-set-1"}), 409)
    assert "already used" in detail


@pytest.mark.parametrize(
    ("body", "codes"),
    [
        ('{"at": 1900000000, "delay": 1}', (422,)),
        ('{"delay": "soon"}', (422,)),
        ('{"delay": -1}', (422,)),
        ('{"delay": 1e9}', (422,)),
        ('{"at": Infinity}', (422,)),
        ('{"at": 1e400}', (422,)),
        ('{"at": true}', (422,)),
        ('{"at": 1e300}', (422,)),  # would have killed the nodes' capture threads
        ('{"at": 4102444800}', (422,)),  # 2100: beyond the nodes' 24 h horizon
        ('{"capture_id": "../x"}', (422,)),
        ('{"capture_id": "a/b"}', (422,)),
        ('{"capture_id": 5}', (422,)),
        ('{"capture_id": ".."}', (422,)),
        ('{"node_id": "NOPE!"}', (422,)),
        ('{"node_id": "ghost"}', (404,)),
        ('{"cameras": [0]}', (422,)),
        ('{"surprise": 1}', (422,)),
        ('{"tolerance_ms": 5}', (422,)),
        ('{"delay": 1, "tolerance_ms": 0}', (422,)),
        ('{"delay": 1, "tolerance_ms": "5"}', (422,)),
        ('{"delay": 1, "tolerance_ms": 1e9}', (422,)),
        ("not json", (422,)),
        ("[]", (422,)),
        ('"scan-1"', (422,)),
        ("{", (422,)),
    ],
)
def test_api_capture_bad_input_is_4xx(api: httpx.Client, body: str, codes: tuple[int, ...]) -> None:
    res = api.post("/api/captures", content=body, headers={"Content-Type": "application/json"})
    assert_4xx(res, *codes)


def test_api_at_and_delay_together_says_so(api: httpx.Client) -> None:
    res = api.post("/api/captures", json={"at": time.time() + 5, "delay": 1})
    assert "not both" in assert_4xx(res, 422)
    form = api.post("/api/captures", data={"delay": "1"})
    assert "JSON object" in assert_4xx(form, 415)


def test_api_cross_origin_plain_text_post_triggers_nothing(api: httpx.Client) -> None:
    """The demo on loopback needs no login, yet a page elsewhere cannot trigger the rig:
    an empty text/plain POST (sent by a browser without a preflight) is refused."""
    before = {s["capture_id"] for s in api.get("/api/captures").json()["items"]}
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert "application/json" in assert_4xx(api.post("/api/captures", headers=evil), 415)
    as_json = {**evil, "Content-Type": "application/json"}
    res = api.post("/api/captures", content=b"{}", headers=as_json)
    assert "cross-origin" in assert_4xx(res, 403)
    assert {s["capture_id"] for s in api.get("/api/captures").json()["items"]} == before


def test_api_foreign_host_is_refused_on_loopback(
    api: httpx.Client, fleet: tuple[ControllerProcess, list[NodeProcess]]
) -> None:
    port = fleet[0].web_port
    detail = assert_4xx(api.get("/api/nodes", headers={"Host": f"rebound.example:{port}"}), 400)
    assert "--allowed-host" in detail
    assert api.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_api_loopback_needs_no_login(api: httpx.Client) -> None:
    session = api.get("/api/session").json()
    assert session == {"user": None, "role": "operator", "login_required": False}
    assert api.get("/login", follow_redirects=False).headers["location"] == "/"


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/api/captures?limit=0", (422,)),
        ("/api/captures?limit=abc", (422,)),
        ("/api/captures?limit=100000", (422,)),
        ("/api/captures?offset=-1", (422,)),
        ("/api/captures/nope", (404,)),
        ("/api/captures/..x", (422,)),
        ("/api/captures/.hidden", (422,)),
        ("/api/captures/x.", (422,)),
        ("/api/captures/%2E%2E%2Fledger.sqlite3", (400,)),
        ("/api/captures/nope/zip", (404,)),
        ("/api/captures/..x/zip", (422,)),
        ("/api/captures/nope/files/x.jpeg", (404,)),
        ("/api/captures/api-set-1/files/ledger.sqlite3", (404,)),
        ("/api/captures/api-set-1/files/..%2F..%2Fledger.sqlite3", (400,)),
        ("/api/captures/api-set-1/files/%2E%2E", (400, 422)),
        ("/api/captures/api-set-1/files/.manifest.json", (422,)),
        ("/api/captures/api-set-1/files/manifest.json/thumbnail", (415,)),
        ("/api/captures/api-set-1/files/nope.jpeg/thumbnail", (404,)),
        ("/api/captures/api-set-1/files/idapi-a_dapi-set-1_cam0.jpeg/thumbnail?width=5", (422,)),
        ("/api/captures/api-set-1/files/idapi-a_dapi-set-1_cam0.jpeg/thumbnail?width=x", (422,)),
        ("/api/nowhere", (404,)),
    ],
)
def test_api_capture_reads_bad_input_is_4xx(
    api: httpx.Client, captured: dict[str, Any], path: str, codes: tuple[int, ...]
) -> None:
    assert_4xx(api.get(path), *codes)


GARBAGE = ["..", "%2E%2E%2F%2E%2E", "%00", "a" * 300, "%F0%9F%92%A5", "%20", "-x", "A.", "1e9"]


def test_api_every_endpoint_answers_garbage_without_500(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    tried = 0
    for template, operations in spec["paths"].items():
        if template == "/api/events":
            continue
        for junk in GARBAGE:
            path = template
            for param in ("node_id", "capture_id", "name"):
                path = path.replace("{" + param + "}", junk)
            for method in ("GET", "POST", "PUT", "DELETE"):
                # a POST with a body that is not an object (an empty one would capture)
                body = json.dumps(junk) if method == "POST" else None
                res = api.request(method, path, params={"limit": junk, "width": junk}, content=body)
                assert res.status_code < 500, f"{method} {path}: {res.status_code} {res.text}"
                if res.status_code >= 400:
                    assert isinstance(res.json()["detail"], str), res.text
                tried += 1
        assert operations
    for body in ("0", '{"delay": null, "at": "x"}', "\u00ff", '{"node_id": []}'):
        res = api.post("/api/captures", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= res.status_code < 500, f"{body!r}: {res.status_code} {res.text}"
    assert tried > 100


def test_api_events_stream_presence_results_and_sets(api: httpx.Client) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    with event_stream(str(api.base_url), timeout=40) as events:  # checks the content type
        for kind, data in events:
            seen.append((kind, data))
            if kind == "hello":
                res = api.post("/api/captures", json={"capture_id": "api-sse"})
                assert res.status_code == 202, res.text
            if kind == "set_complete" and data["summary"]["capture_id"] == "api-sse":
                break
    kinds = [k for k, _ in seen]
    assert kinds[0] == "hello" and seen[0][1]["broker_connected"] is True
    assert "set_opened" in kinds and "status" in kinds
    results = [d for k, d in seen if k == "result" and d["capture_id"] == "api-sse"]
    assert sorted(d["node_id"] for d in results) == sorted(NODES)
    assert all(d["status"] == "ok" for d in results)


def test_api_web_port_taken_fails_with_one_line_error(
    broker: EmbeddedBroker,
    fleet: tuple[ControllerProcess, list[NodeProcess]],
    tmp_path: Path,
) -> None:
    clash = controller_process(broker, fleet[0].root, tmp_path, web_port=fleet[0].web_port)
    clash.start()
    assert clash.proc is not None
    code = clash.proc.wait(20)
    assert code != 0
    errors = [line for line in clash.log().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "already in use" in errors[0] and "--web-port" in errors[0]


def test_api_broker_unreachable_is_503_and_shown(broker: EmbeddedBroker, tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    ctl = controller_process(broker, "pepi-t/dead", tmp_path)
    ctl.args[ctl.args.index("--broker") + 1] = dead
    ctl.start()
    try:
        with httpx.Client(base_url=ctl.url, timeout=10) as client:

            def up() -> httpx.Response | None:
                try:
                    return client.get("/api/nodes")
                except httpx.TransportError:
                    return None

            assert wait_until(up, 20, "controller web API").json()["broker_connected"] is False
            res = client.post("/api/captures", json={})
            assert res.status_code == 503 and "broker" in res.json()["detail"], res.text
            assert "broker: <b>unreachable</b>" in client.get("/").text
    finally:
        assert ctl.stop() == 0, ctl.log()


def test_api_controller_stops_cleanly_with_a_client_streaming(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    ctl = controller_process(broker, f"pepi-t/{uuid.uuid4().hex[:10]}", tmp_path)
    wait_ready(ctl.start())
    with (
        httpx.Client(base_url=ctl.url, timeout=httpx.Timeout(5, read=30)) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        next(stream.iter_lines())
        started = time.monotonic()
        assert ctl.stop() == 0, ctl.log()
        assert time.monotonic() - started < 10
