"""Who must log in, which Host names are ours, what counts as a same-origin change."""

from __future__ import annotations

from pathlib import Path

import pytest

from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.web.guard import (
    auth_required,
    cross_origin,
    default_allowed_hosts,
    host_allowed,
    host_name,
    is_loopback,
    json_content_type,
)
from pepi_fleet.controller.web.security import WebAccess


@pytest.mark.parametrize(
    ("web_host", "required"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("localhost", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("::", True),
        ("", True),
        ("192.168.1.10", True),
        ("rig-controller.local", True),  # a name may resolve to anything
    ],
)
def test_guard_auto_requires_a_login_off_loopback(web_host: str, required: bool) -> None:
    assert auth_required("auto", web_host) is required
    assert auth_required("on", web_host) is True
    assert auth_required("off", web_host) is False


def test_guard_controller_default_is_auto() -> None:
    config = ControllerConfig.model_validate({"data_dir": "/tmp/x"})
    assert config.auth == "auto"
    assert WebAccess.of(config).login_required is False  # the default web host is loopback
    wide = config.model_copy(update={"web_host": "0.0.0.0"})
    assert WebAccess.of(wide).login_required is True
    assert WebAccess.of(wide.model_copy(update={"auth": "off"})).login_required is False


def test_guard_tls_needs_cert_and_key() -> None:
    with pytest.raises(ValueError, match="together"):
        ControllerConfig.model_validate({"data_dir": "/tmp/x", "tls_cert": "/tmp/c.pem"})


def test_guard_loopback_listener_answers_to_loopback_names_only() -> None:
    assert default_allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert default_allowed_hosts("192.168.1.10") == {"192.168.1.10"}
    everywhere = default_allowed_hosts("0.0.0.0")
    assert {"127.0.0.1", "localhost"} <= everywhere and "0.0.0.0" not in everywhere


def test_guard_allowed_host_adds_to_the_defaults() -> None:
    config = ControllerConfig.model_validate(
        {"data_dir": "/tmp/x", "allowed_hosts": ["rig.example"]}
    )
    assert WebAccess.of(config).allowed_hosts == {"127.0.0.1", "localhost", "::1", "rig.example"}
    assert not is_loopback("rig.example")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("Rig.Example", "rig.example"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ],
)
def test_guard_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_guard_host_check() -> None:
    ours = {"127.0.0.1", "localhost"}
    assert host_allowed("127.0.0.1:8080", ours)
    assert host_allowed("LOCALHOST:8080", ours)
    assert not host_allowed("attacker.example:8080", ours)  # DNS rebinding
    assert not host_allowed(None, ours)
    assert not host_allowed("", ours)
    assert host_allowed("anything", {"*"})


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/json-patch+json", False),
        (None, False),
    ],
)
def test_guard_json_content_type(value: str | None, ok: bool) -> None:
    assert json_content_type(value) is ok


HOST = "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("origin", "referer", "fetch_site", "refused"),
    [
        (None, None, None, False),  # curl, scripts: no browser, no ambient cookies
        ("http://127.0.0.1:8080", None, None, False),
        ("https://127.0.0.1:8080", None, None, False),  # behind a TLS proxy
        (None, "http://127.0.0.1:8080/some/page", None, False),
        (None, None, "same-origin", False),
        ("http://evil.example", None, "same-origin", False),  # the browser's own word counts
        ("http://evil.example", None, None, True),
        ("http://127.0.0.1:9999", None, None, True),  # another port is another origin
        ("null", None, None, True),
        (None, "http://evil.example/", None, True),
        ("http://evil.example", "http://127.0.0.1:8080/", None, True),  # Origin counts first
        (None, None, "cross-site", True),
        (None, None, "same-site", True),
        (None, None, "none", True),
    ],
)
def test_guard_cross_origin(
    origin: str | None, referer: str | None, fetch_site: str | None, refused: bool
) -> None:
    assert (cross_origin(HOST, origin, referer, fetch_site) is not None) is refused


def test_guard_controller_password_file_wins_over_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    config = ControllerConfig.model_validate(
        {"data_dir": tmp_path, "password": "from-env", "password_file": secret}
    )
    assert config.password == "from-the-file"
    secret.write_text("")
    with pytest.raises(ValueError, match="empty"):
        ControllerConfig.model_validate({"data_dir": tmp_path, "password_file": secret})
