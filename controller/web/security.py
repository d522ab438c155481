"""The web app's gate: Host check, same-origin JSON for every change, login and roles.

One ASGI middleware in front of every route (static files included), so no route can
forget a check. Viewers may look (GET); operators may also act (anything else). Logging
in and out is open to anyone who passes the Host and CSRF checks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pepi_fleet.controller.access import OPEN, AccessStore, Principal, Role
from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.web.guard import (
    ANY_HOST,
    SAFE_METHODS,
    auth_required,
    cross_origin,
    default_allowed_hosts,
    host_allowed,
    is_loopback,
    json_content_type,
)
from pepi_fleet.controller.web.sessions import SESSION_COOKIE, LoginThrottle, SessionBook

logger = logging.getLogger(__name__)

LOGIN_PAGE = "/login"
OPEN_PATHS = frozenset({LOGIN_PAGE, "/api/login", "/api/logout", "/api/session"})
OPEN_PREFIXES = ("/static/",)
NOT_PAGES = ("/api/", "/ui/", "/openapi.json")
"""Fetched by scripts, not opened by people: a 401 there, not a redirect to the login page."""
JSON_ONLY = "send a JSON object with Content-Type: application/json"
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        # previews come through the controller's relay, shown from blob: URLs
        b"default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'self'",
    ),
]


@dataclass
class WebAccess:
    """How the web app admits requests (one per app; shared with the login routes)."""

    login_required: bool
    allowed_hosts: frozenset[str]
    store: AccessStore | None = None
    sessions: SessionBook = field(default_factory=SessionBook)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    web_host: str = "127.0.0.1"

    @classmethod
    def of(cls, config: ControllerConfig) -> WebAccess:
        """The controller's rules: ``--auth``, ``--allowed-host`` and the listen address."""
        required = auth_required(config.auth, config.web_host)
        allowed = default_allowed_hosts(config.web_host) | set(config.allowed_hosts)
        store = AccessStore(config.data_dir) if required else None
        return cls(required, allowed, store, web_host=config.web_host)

    def describe(self, data_dir: Path, tls: bool) -> list[str]:
        """What the controller says at start about who may use the page, and what to fix."""
        names = "any" if ANY_HOST in self.allowed_hosts else ", ".join(sorted(self.allowed_hosts))
        lines = [f"page and API answer to the host names: {names} (--allowed-host adds one)"]
        if not self.login_required:
            lines.append("no login required (loopback only, or --auth off)")
            if not is_loopback(self.web_host):
                lines.append(
                    f"WARNING: --auth off on {self.web_host or 'every interface'}: anyone who "
                    "reaches it can capture and download images"
                )
            return lines
        assert self.store is not None
        users, tokens = len(self.store.users()), len(self.store.tokens())
        lines.append(f"login required: {users} users, {tokens} API tokens in {self.store.path}")
        if not users and not tokens:
            lines.append(
                f"nobody can log in yet: pepi controller --data-dir {data_dir} user add NAME "
                "--role operator"
            )
        if not tls and not is_loopback(self.web_host):
            lines.append(
                "WARNING: plain HTTP: passwords and session cookies cross the network in clear "
                "text; add --tls-cert/--tls-key, or serve it behind a TLS reverse proxy"
            )
        return lines

    def principal(self, headers: Headers) -> Principal | None:
        """Who sent the request: the bearer token's, else the session's; None if nobody."""
        if not self.login_required:
            return OPEN
        if self.store is None:
            return None
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self.store.verify_token(credential.strip())
        session_id = session_cookie(headers)
        user = self.sessions.user(session_id) if session_id else None
        role = self.store.role_of(user) if user else None
        return Principal(user, role, "password") if user and role else None


def session_cookie(headers: Headers) -> str | None:
    """The session id from the request's Cookie header, if any."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


def open_path(path: str) -> bool:
    """Reachable without a login (the login page and what it loads)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class SecurityMiddleware:
    """Refuses what ``WebAccess`` does not admit; puts the Principal in ``request.state``."""

    def __init__(self, app: ASGIApp, access: WebAccess) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        refusal = self._foreign(method, headers)
        principal = None if refusal else self.access.principal(headers)
        if refusal is None and not open_path(path):
            refusal = self._unauthorised(method, path, headers, principal)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake is a GET that browsers send with cookies from any page:
        besides the Host and the login (viewers may watch), its Origin must be ours."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        refusal: tuple[int, str] | None = None
        principal = None
        if not host_allowed(host, self.access.allowed_hosts):
            refusal = (400, f"Host {(host or '')[:100]!r} is not a name of this controller")
        elif (why := cross_origin(host, headers.get("origin"), None, None)) is not None:
            refusal = (403, f"cross-origin WebSocket refused: {why}")
        else:
            principal = self.access.principal(headers)
            if principal is None:
                refusal = (
                    401,
                    "log in first: on the page at /login, or send Authorization: Bearer "
                    "<API token>",
                )
        if refusal is not None:
            await _refuse_websocket(scope, receive, send, *refusal)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _foreign(self, method: str, headers: Headers) -> ASGIApp | None:
        """A refusal for a foreign Host (DNS rebinding) or a change that is not same-origin
        JSON (CSRF); None if neither."""
        host = headers.get("host")
        if not host_allowed(host, self.access.allowed_hosts):
            names = ", ".join(sorted(self.access.allowed_hosts))
            return error(
                400,
                f"Host {(host or '')[:100]!r} is not a name of this controller ({names}): "
                "start it with --allowed-host NAME for each name it is reached by",
            )
        if method not in SAFE_METHODS:
            if not json_content_type(headers.get("content-type")):
                return error(415, JSON_ONLY)
            if not _has_body(headers):
                return error(400, f"the body is empty: {JSON_ONLY} (at least {{}})")
            why = cross_origin(
                host, headers.get("origin"), headers.get("referer"), headers.get("sec-fetch-site")
            )
            if why is not None:
                return error(403, f"cross-origin request refused: {why}")
        return None

    def _unauthorised(
        self, method: str, path: str, headers: Headers, principal: Principal | None
    ) -> ASGIApp | None:
        """A refusal for nobody logged in or a role that may not do this; None if allowed."""
        if principal is None:
            if headers.get("authorization"):
                return error(
                    401,
                    "the API token is unknown or revoked: create one with "
                    "'pepi controller token add NAME --role viewer|operator'",
                    bearer=True,
                )
            if method == "GET" and not path.startswith(NOT_PAGES):
                return redirect(f"{LOGIN_PAGE}?next={quote(path, safe='/')}")
            return error(
                401,
                "log in first: on the page at /login, or send Authorization: Bearer <API token>",
                bearer=True,
            )
        needed = Role.VIEWER if method in SAFE_METHODS else Role.OPERATOR
        if not principal.role.may(needed):
            return error(
                403,
                f"{principal.name} is a {principal.role}, who may look but not change "
                "anything: ask for an operator login",
            )
        return None


async def _refuse_websocket(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str
) -> None:
    """Answer the handshake with an HTTP error (where the server can), else close it."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})


def _has_body(headers: Headers) -> bool:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return True
    try:
        return int(headers.get("content-length", "0")) > 0
    except ValueError:
        return False


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def error(status: int, detail: str, bearer: bool = False) -> ASGIApp:
    """A JSON error answer like every other of the API: ``{"detail": "<one line>"}``."""
    headers = [(b"content-type", b"application/json")]
    if bearer:
        headers.append((b"www-authenticate", b'Bearer realm="pepi-fleet"'))
    return _respond(status, headers, json.dumps({"detail": detail}).encode())


def redirect(location: str) -> ASGIApp:
    """303 to ``location`` (the login page)."""
    headers = [(b"location", location.encode()), (b"cache-control", b"no-store")]
    return _respond(303, headers, b"")


def _respond(status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> ASGIApp:
    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        all_headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": body})

    return respond
