"""Pure request checks of the web page and REST API: who must log in, which Host names are
ours, whether a state-changing request is same-origin JSON (CSRF)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

AuthMode = Literal["auto", "on", "off"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARDS = ("", "0.0.0.0", "::")
ANY_HOST = "*"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(web_host: str) -> bool:
    """Whether listening on ``web_host`` reaches this machine only (``localhost``, 127/8, ::1)."""
    if web_host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(web_host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name may resolve to anything: not loopback unless it is 'localhost'


def auth_required(mode: AuthMode, web_host: str) -> bool:
    """``on``/``off`` as given; ``auto``: a login unless the page listens on loopback only."""
    if mode == "auto":
        return not is_loopback(web_host)
    return mode == "on"


def default_allowed_hosts(web_host: str) -> frozenset[str]:
    """The Host names accepted without ``--allowed-host``: the listen address, and the
    loopback names where loopback can reach it; on every interface also this machine's
    names and the addresses they resolve to."""
    names = {host_name(web_host)} if web_host not in WILDCARDS else set()
    if web_host in WILDCARDS or is_loopback(web_host):
        names.update(LOOPBACK_NAMES)
    if web_host in WILDCARDS:
        names.update(_machine_names())
    return frozenset(n for n in names if n)


def _machine_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    names |= {f"{socket.gethostname()}.local"}
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    names |= {str(info[4][0]) for info in infos}
    return {host_name(n) for n in names if n}


def host_name(value: str) -> str:
    """A Host header value (or a name) without its port, lower case, IPv6 without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare IPv6 address, or a name without a port


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    """Whether the request's Host is one of ours (``*`` accepts any: a proxy checks it)."""
    allowed = set(allowed)
    if ANY_HOST in allowed:
        return True
    return bool(host_header) and host_name(host_header or "") in {host_name(a) for a in allowed}


def json_content_type(content_type: str | None) -> bool:
    """``application/json`` (parameters such as ``charset`` aside)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def cross_origin(
    host_header: str | None,
    origin: str | None,
    referer: str | None,
    fetch_site: str | None,
) -> str | None:
    """Why a state-changing request is not same-origin, or None when it is (or comes from a
    script that sends none of these headers: no browser, so no one else's cookies).

    The browser's own word (``Sec-Fetch-Site``) counts first, then ``Origin``, then
    ``Referer``; their host[:port] must be the request's Host (a reverse proxy must pass
    the Host it was asked for).
    """
    if fetch_site is not None:
        return None if fetch_site == "same-origin" else f"Sec-Fetch-Site is {fetch_site!r}"
    source, what = (origin, "Origin") if origin is not None else (referer, "Referer")
    if source is None:
        return None
    netloc = urlsplit(source).netloc.lower() if source != "null" else ""
    if not netloc or not host_header or netloc != host_header.strip().lower():
        return f"{what} {source[:100]!r} is not this page's address"
    return None
