"""Login, roles, API tokens, CSRF and Host checks of a real ``pepi controller --auth on``."""

from __future__ import annotations

import os
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.controllers import ControllerProcess
from support.nodes import NodeProcess, node_process
from support.processes import PEPI
from support.web import (
    add_token,
    add_user,
    controller_process,
    pepi,
    wait_nodes,
    wait_ready,
    wait_set_downloaded,
)

from pepi_fleet.broker.runner import Credentials, EmbeddedBroker
from pepi_fleet.controller.web.sessions import SESSION_COOKIE

NODE = "auth-a"
PASSWORDS = {"olga": "operator-pass-1", "vic": "viewer-pass-1", "gone": "gone-pass-1"}
OTHER_NAME = "rig.example"


@dataclass
class Rig:
    controller: ControllerProcess
    node: NodeProcess
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.controller.url

    @property
    def origin(self) -> dict[str, str]:
        """What a browser adds to a request from the controller's own page."""
        return {"Origin": self.url}

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=20, headers=headers)

    @contextmanager
    def logged_in(self, user: str) -> Iterator[httpx.Client]:
        """A client with ``user``'s session cookie, as the login page gets it."""
        with self.client() as client:
            res = client.post(
                "/api/login",
                json={"username": user, "password": PASSWORDS[user]},
                headers=self.origin,
            )
            assert res.status_code == 200, res.text
            yield client


@pytest.fixture(scope="module")
def rig(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A controller on loopback forced to require a login, with users and tokens made by the
    CLI, one node; it reads its MQTT password from --password-file (the variable is wrong)."""
    base = tmp_path_factory.mktemp("auth")
    root = f"pepi-t/{uuid.uuid4().hex[:10]}"
    node = node_process(broker, root, NODE, base)
    password_file = base / "mqtt-password"
    ctl = controller_process(
        broker,
        root,
        base,
        "--auth",
        "on",
        "--allowed-host",
        OTHER_NAME,
        "--password-file",
        str(password_file),
    )
    password_file.write_text(ctl.creds.password + "\n")
    ctl.creds = Credentials(ctl.creds.username, "not-the-password")
    for user, role in (("olga", "operator"), ("vic", "viewer"), ("gone", "operator")):
        add_user(ctl.data_dir, user, role, PASSWORDS[user])
    tokens = {
        name: add_token(ctl.data_dir, name, role)
        for name, role in (("script", "operator"), ("dash", "viewer"), ("old", "operator"))
    }
    try:
        node.start()
        wait_ready(ctl.start(), token=tokens["dash"])
        rig = Rig(ctl, node, tokens)
        with rig.client(tokens["dash"]) as client:
            wait_nodes(client, {NODE})
        yield rig
    finally:
        ctl.stop()
        node.stop()


def assert_refused(res: httpx.Response, status: int, *words: str) -> str:
    assert res.status_code == status, f"{res.request.method} {res.request.url}: {res.text}"
    detail = res.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail, detail
    return detail


def set_ids(rig: Rig) -> set[str]:
    with rig.client(rig.tokens["dash"]) as client:
        return {s["capture_id"] for s in client.get("/api/captures").json()["items"]}


def test_web_auth_nothing_without_a_login(rig: Rig) -> None:
    with rig.client() as anonymous:
        paths = ("/api/nodes", "/api/captures", "/api/events", "/openapi.json", "/ui/captures/x")
        for path in paths:
            res = anonymous.get(path)
            assert_refused(res, 401, "log in")
            assert res.headers["www-authenticate"].startswith("Bearer")
        page = anonymous.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert_refused(anonymous.post("/api/captures", json={}, headers=rig.origin), 401)
        # what the login page needs is open
        assert 'id="login"' in anonymous.get("/login").text
        assert anonymous.get("/static/login.js").status_code == 200
        session = anonymous.get("/api/session").json()
        assert session == {"user": None, "role": None, "login_required": True}
    assert set_ids(rig) == set()


def test_web_auth_login_cookie_is_httponly_strict_and_logout_ends_it(rig: Rig) -> None:
    with rig.logged_in("olga") as client:
        assert client.cookies.get(SESSION_COOKIE)
        with rig.client() as fresh:
            res = fresh.post(
                "/api/login",
                json={"username": "olga", "password": PASSWORDS["olga"]},
                headers=rig.origin,
            )
        set_cookie = res.headers["set-cookie"].lower()
        assert set_cookie.startswith(f"{SESSION_COOKIE}=")
        for attribute in ("httponly", "samesite=strict", "path=/", "max-age="):
            assert attribute in set_cookie, set_cookie
        assert "secure" not in set_cookie  # plain HTTP here; the TLS test checks Secure
        assert res.json() == {"user": "olga", "role": "operator", "login_required": True}
        assert client.get("/api/session").json()["user"] == "olga"
        assert "role-operator" in client.get("/").text
        assert client.post("/api/logout", json={}, headers=rig.origin).status_code == 200
        stale = {SESSION_COOKIE: res.cookies[SESSION_COOKIE]}
    with rig.client() as again:
        again.cookies.update(stale)
        assert again.get("/api/nodes").status_code == 200  # the other session still lives
        assert again.post("/api/logout", json={}, headers=rig.origin).status_code == 200
        assert_refused(again.get("/api/nodes"), 401)


def test_web_auth_wrong_password_or_user_is_refused(rig: Rig) -> None:
    with rig.client() as client:
        for user, password in (("olga", "wrong-password"), ("nobody", PASSWORDS["olga"])):
            res = client.post(
                "/api/login", json={"username": user, "password": password}, headers=rig.origin
            )
            assert_refused(res, 401, "wrong user name or password")
            assert SESSION_COOKIE not in res.cookies
        assert_refused(client.get("/api/nodes"), 401)


def test_web_auth_operator_captures_viewer_only_looks(rig: Rig) -> None:
    with rig.logged_in("vic") as viewer:
        assert viewer.get("/api/nodes").status_code == 200
        assert "role-viewer" in viewer.get("/").text
        res = viewer.post("/api/captures", json={"capture_id": "by-vic"}, headers=rig.origin)
        assert_refused(res, 403, "vic is a viewer")
    with rig.logged_in("olga") as operator:
        res = operator.post("/api/captures", json={"capture_id": "by-olga"}, headers=rig.origin)
        assert res.status_code == 202, res.text
        done = wait_set_downloaded(operator, "by-olga", images=1)
        image = operator.get(done["files"][0]["url"])
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    with rig.logged_in("vic") as viewer:  # a viewer downloads images and zips
        assert viewer.get("/api/captures/by-olga/zip").status_code == 200
    assert "by-vic" not in set_ids(rig)


def test_web_auth_bearer_tokens_by_role_and_revoked_at_once(rig: Rig) -> None:
    with rig.client(rig.tokens["dash"]) as dash:
        assert dash.get("/api/nodes").status_code == 200
        assert_refused(dash.post("/api/captures", json={}), 403, "dash is a viewer")
    with rig.client(rig.tokens["script"]) as script:
        res = script.post("/api/captures", json={"capture_id": "by-script"})  # no Origin: curl
        assert res.status_code == 202, res.text
        wait_set_downloaded(script, "by-script", images=1)
    with rig.client(rig.tokens["old"]) as old:
        assert old.get("/api/nodes").status_code == 200
        pepi("controller", "--data-dir", str(rig.controller.data_dir), "token", "remove", "old")
        assert_refused(old.get("/api/nodes"), 401, "unknown or revoked")
    with rig.client("pepi_" + "x" * 43) as forged:
        assert_refused(forged.get("/api/nodes"), 401, "unknown or revoked")
    listed = pepi("controller", "--data-dir", str(rig.controller.data_dir), "token", "list")
    assert "script" in listed.stdout and "old" not in listed.stdout
    assert rig.tokens["script"] not in listed.stdout  # only hashes are kept


def test_web_auth_removed_user_is_logged_out_at_once(rig: Rig) -> None:
    with rig.logged_in("gone") as client:
        assert client.get("/api/nodes").status_code == 200
        pepi("controller", "--data-dir", str(rig.controller.data_dir), "user", "remove", "gone")
        assert_refused(client.get("/api/nodes"), 401)


@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 415, "JSON"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "Origin"),
        ({"Content-Type": "application/json", "Origin": "null"}, 403, "Origin"),
        ({"Content-Type": "application/json", "Referer": "http://evil.example/x"}, 403, "Referer"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, "Sec-Fetch"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403, "Sec-Fetch"),
    ],
)
def test_web_auth_cross_site_changes_are_refused_even_logged_in(
    rig: Rig, headers: dict[str, str], status: int, why: str
) -> None:
    before = set_ids(rig)
    with rig.logged_in("olga") as client:
        res = client.post("/api/captures", content=b"{}", headers=headers)
        assert_refused(res, status, why)
        empty = client.post(
            "/api/captures", headers={"Content-Type": "application/json", **rig.origin}
        )
        assert_refused(empty, 400, "empty")
    assert set_ids(rig) == before


def test_web_auth_same_origin_by_sec_fetch_site_or_referer_is_accepted(rig: Rig) -> None:
    with rig.logged_in("olga") as client:
        for capture_id, header in (
            ("by-fetch-site", {"Sec-Fetch-Site": "same-origin"}),
            ("by-referer", {"Referer": f"{rig.url}/"}),
        ):
            res = client.post("/api/captures", json={"capture_id": capture_id}, headers=header)
            assert res.status_code == 202, res.text
            wait_set_downloaded(client, capture_id, images=1)


def test_web_auth_foreign_host_is_refused_configured_one_accepted(rig: Rig) -> None:
    with rig.client(rig.tokens["script"]) as client:
        port = rig.controller.web_port
        res = client.get("/api/nodes", headers={"Host": f"attacker.example:{port}"})
        assert_refused(res, 400, "attacker.example", "--allowed-host")
        page = client.get("/login", headers={"Host": "attacker.example"})
        assert page.status_code == 400  # the page too, not only the API (DNS rebinding)
        for name in (OTHER_NAME, "localhost", "127.0.0.1"):
            assert client.get("/api/nodes", headers={"Host": f"{name}:{port}"}).status_code == 200


def test_web_auth_security_headers_forbid_framing(rig: Rig) -> None:
    with rig.client() as client:
        res = client.get("/login")
    assert res.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in res.headers["content-security-policy"]


def test_web_auth_cli_with_password_file_reaches_the_broker(
    rig: Rig, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """``pepi nodes`` and ``pepi controller forget`` read the MQTT password from a file."""
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(broker.users["controller"] + "\n")
    wrong.write_text("not-the-password\n")
    broker_args = ["--broker", broker.url, "--username", "controller"]
    broker_args += ["--topic-root", rig.controller.root]
    assert NODE in pepi("nodes", *broker_args, "--password-file", str(right)).stdout
    forgot = pepi("controller", *broker_args, "--password-file", str(right), "forget", "ghost")
    assert "forgot ghost" in forgot.stdout
    refused = subprocess.run(
        [*PEPI, "nodes", *broker_args, "--password-file", str(wrong)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PEPI_")},
    )
    assert refused.returncode != 0, refused.stdout


@pytest.fixture
def lone_controller(
    broker: EmbeddedBroker, tmp_path: Path
) -> Iterator[Callable[..., ControllerProcess]]:
    """``start(tls=None)``: a controller with no nodes, an operator user ``olga`` and a
    viewer token, serving HTTPS with ``tls`` (certificate, key); stopped after the test."""
    started: list[ControllerProcess] = []

    def start(tls: tuple[Path, Path] | None = None) -> ControllerProcess:
        root = f"pepi-t/{uuid.uuid4().hex[:10]}"
        https = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
        ctl = controller_process(broker, root, tmp_path, "--auth", "on", *https)
        ctl.tls = tls is not None
        add_user(ctl.data_dir, "olga", "operator", PASSWORDS["olga"])
        token = add_token(ctl.data_dir, "dash", "viewer")
        started.append(ctl.start())
        trust = {"verify": ssl.create_default_context(cafile=str(tls[0]))} if tls else {}
        wait_ready(ctl, token=token, **trust)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()


def test_web_auth_password_guessing_is_throttled(
    lone_controller: Callable[..., ControllerProcess],
) -> None:
    ctl = lone_controller()
    login = {"username": "olga", "password": "guess"}
    with httpx.Client(base_url=ctl.url, timeout=20, headers={"Origin": ctl.url}) as client:
        for _ in range(5):
            assert_refused(client.post("/api/login", json=login), 401)
        res = client.post("/api/login", json=login)
        assert_refused(res, 429, "too many failed logins")
        assert int(res.headers["retry-after"]) > 0
        right = {"username": "olga", "password": PASSWORDS["olga"]}
        assert_refused(client.post("/api/login", json=right), 429)  # even the right one, now


def test_web_auth_https_with_tls_cert_and_secure_cookie(
    lone_controller: Callable[..., ControllerProcess], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ctl = lone_controller(tls=(cert, key))
    assert ctl.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=ctl.url, timeout=20, verify=trust) as client:
        res = client.post(
            "/api/login",
            json={"username": "olga", "password": PASSWORDS["olga"]},
            headers={"Origin": ctl.url},
        )
        assert res.status_code == 200, res.text
        set_cookie = res.headers["set-cookie"].lower()
        assert "secure" in set_cookie and "httponly" in set_cookie
        assert client.get("/api/nodes").status_code == 200
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
        httpx.get(ctl.url.replace("https://", "http://") + "/login", timeout=5)
