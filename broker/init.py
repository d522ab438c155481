"""``pepi broker init``: the CA, the broker's certificate, logins, password file and ACL."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pepi_fleet.broker.access import bridge_user, named_users, production_acl, render_acl
from pepi_fleet.broker.bridge import (
    BRIDGE_CONF_NAME,
    CENTRAL_TLS_PORT,
    SiteSpec,
    render_bridge_conf,
)
from pepi_fleet.broker.pki import (
    KeyPair,
    certificate_hosts,
    issue_client,
    issue_server,
    issued_by,
    new_ca,
)
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.ids import validate_node_id, validate_site_id

BROKER_DIR = "broker"
"""Everything under DIR/broker goes to the broker host (see ``INSTALL``)."""
LOGINS_DIR = "logins"
SITES_DIR = "sites"
"""DIR/sites/<site>/broker goes to that site's broker host."""
ETC_PEPI = "/etc/mosquitto/pepi"
CA_DIR = "ca"
CONF_NAME = "pepi.conf"
PASSWORD_NAME = "password"
SECRET_MODE = 0o600


class InitError(PepiError):
    """The broker files could not be made."""


@dataclass(frozen=True)
class InitReport:
    """What ``init_broker_dir`` made and kept."""

    directory: Path
    nodes: list[str]
    users: list[str]
    """Every login: the ACL's named users (controller, automation), then the nodes."""
    hosts: list[str]
    created: list[Path] = field(default_factory=list)
    stale_logins: list[str] = field(default_factory=list)
    """Logins in DIR/logins that are no longer in the password file (nodes left out)."""
    sites: list[SiteSpec] = field(default_factory=list)
    central_address: str | None = None
    """``host:port`` the sites' bridges connect to (TLS), when there are sites."""


def init_broker_dir(
    directory: Path,
    nodes: Sequence[str],
    hosts: Sequence[str],
    root: str = "pepi/v1",
    client_certs: bool = False,
    mosquitto_passwd: str | None = None,
    sites: Sequence[SiteSpec] = (),
    central_address: str | None = None,
) -> InitReport:
    """Make (or complete) DIR for a broker serving ``nodes`` under ``hosts``, and one broker
    per site in ``sites``, each bridged to it (at ``central_address``, default the first
    host's TLS port).

    A second run keeps the CA, the passwords and any certificate still right, adds what is
    missing (new nodes, client certificates), reissues the server certificate when the host
    names changed, and rewrites the password file and the ACL for exactly these nodes.
    """
    nodes = _check_nodes(nodes, sites)
    hosts = list(dict.fromkeys(hosts))
    named = named_users(production_acl())
    bridges = [bridge_user(spec.site) for spec in sites]
    users = [*named, *nodes, *bridges]
    passwd_tool = mosquitto_passwd or _find_mosquitto_passwd()
    made: list[Path] = []
    for sub in ("", CA_DIR, BROKER_DIR, LOGINS_DIR):
        (directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _ca(directory / CA_DIR, made)
    broker = directory / BROKER_DIR
    _server(broker, ca, hosts, made)
    _write(broker / "ca.crt", ca.cert_pem, 0o644, made)
    conf = resources.files("pepi_fleet.broker").joinpath("mosquitto.conf").read_bytes()
    _write(broker / CONF_NAME, conf, 0o644, made)
    logins = directory / LOGINS_DIR
    passwords = {user: _login(logins / user, ca, client_certs, made) for user in users}
    site_nodes = {spec.site: list(spec.nodes) for spec in sites}
    _write(broker / "acl", render_acl(root, False, nodes, site_nodes).encode(), SECRET_MODE, made)
    _write_password_file(broker / "passwd", passwords, passwd_tool)
    address = central_address or (f"{hosts[0]}:{CENTRAL_TLS_PORT}" if hosts else "")
    for spec in sites:
        site_passwords = {n: _login(logins / n, ca, client_certs, made) for n in spec.nodes}
        bridge = render_bridge_conf(
            spec.site, address, f"{ETC_PEPI}/ca.crt", passwords[bridge_user(spec.site)], root
        )
        folder = directory / SITES_DIR / spec.site / BROKER_DIR
        _site_broker(folder, spec, ca, conf, made)
        acl = render_acl(root, False, spec.nodes, site_broker=True)
        _write(folder / "acl", acl.encode(), SECRET_MODE, made)
        _write(folder / BRIDGE_CONF_NAME, bridge.encode(), SECRET_MODE, made)
        _write_password_file(folder / "passwd", site_passwords, passwd_tool)
    everyone = set(users).union(*(spec.nodes for spec in sites))
    present = sorted(p.name for p in (directory / LOGINS_DIR).iterdir() if p.is_dir())
    return InitReport(
        directory=directory,
        nodes=nodes,
        users=users,
        hosts=hosts,
        created=made,
        stale_logins=[name for name in present if name not in everyone],
        sites=list(sites),
        central_address=address if sites else None,
    )


def _site_broker(folder: Path, spec: SiteSpec, ca: KeyPair, conf: bytes, made: list[Path]) -> None:
    """A site broker's certificate (for its own hosts), the CA and the same drop-in."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for parent in (folder.parent, folder.parent.parent):
        parent.chmod(0o700)
    _server(folder, ca, list(dict.fromkeys(spec.hosts)), made)
    _write(folder / "ca.crt", ca.cert_pem, 0o644, made)
    _write(folder / CONF_NAME, conf, 0o644, made)


def install_steps(report: InitReport) -> str:
    """What to copy where, as the commands an operator runs."""
    d = report.directory
    b = d / BROKER_DIR
    logins = d / LOGINS_DIR
    host = report.hosts[0]
    lines = [
        f"Wrote {d}: it holds every password and the CA key; keep it private.",
        "",
        "On the broker host (Debian's mosquitto 2.0; for 2.1 read the comments in pepi.conf):",
        "  sudo install -d -o mosquitto -g mosquitto -m 0700 /etc/mosquitto/pepi",
        f"  sudo install -o mosquitto -g mosquitto -m 0600 {b}/server.key {b}/passwd {b}/acl "
        "/etc/mosquitto/pepi/",
        f"  sudo install -o mosquitto -g mosquitto -m 0644 {b}/ca.crt {b}/server.crt "
        "/etc/mosquitto/pepi/",
        f"  sudo install -m 0644 {b}/{CONF_NAME} /etc/mosquitto/conf.d/{CONF_NAME}",
        "  sudo systemctl restart mosquitto",
        "",
        *_central_node_steps(report),
        "The controller on the broker host (plain MQTT on loopback):",
        f'  PEPI_MQTT_PASSWORD="$(cat {logins}/controller/{PASSWORD_NAME})" '
        "pepi controller --broker mqtt://127.0.0.1:1883 --username controller ...",
        "Elsewhere: --broker mqtts://" + host + ":8883 --ca-file ca.crt.",
        "",
        f"Home Assistant and scripts: username automation, password in "
        f"{logins}/automation/{PASSWORD_NAME},",
        f"  TLS on {host}:8883 with {b}/ca.crt as the CA.",
    ]
    for spec in report.sites:
        lines += ["", *_site_steps(report, spec)]
    if report.stale_logins:
        lines += [
            "",
            "No longer in the password file and ACL (left out of --nodes): "
            + ", ".join(report.stale_logins),
        ]
    return "\n".join(lines)


def _central_node_steps(report: InitReport) -> list[str]:
    """What to copy to the central broker's own nodes, if it has any."""
    if not report.nodes:
        return []
    logins = report.directory / LOGINS_DIR
    node = report.nodes[0]
    return [
        f"On each node ({', '.join(report.nodes)}):"
        f" copy {logins}/<node>/{PASSWORD_NAME} and ca.crt to /etc/pepi/ (the password",
        "  mode 0600, owned by the user that runs pepi node), then run, e.g. for " + node + ":",
        f"  pepi node --node-id {node} --broker mqtts://{report.hosts[0]}:8883 "
        f"--ca-file /etc/pepi/ca.crt --password-file /etc/pepi/{PASSWORD_NAME} ...",
        "",
    ]


def _site_steps(report: InitReport, spec: SiteSpec) -> list[str]:
    """What to copy where for one site broker and its nodes."""
    b = report.directory / SITES_DIR / spec.site / BROKER_DIR
    logins = report.directory / LOGINS_DIR
    return [
        f"Site {spec.site}: on its broker host ({', '.join(spec.hosts)}), bridged to "
        f"{report.central_address}:",
        f"  sudo install -d -o mosquitto -g mosquitto -m 0700 {ETC_PEPI}",
        f"  sudo install -o mosquitto -g mosquitto -m 0600 {b}/server.key {b}/passwd {b}/acl "
        f"{ETC_PEPI}/",
        f"  sudo install -o mosquitto -g mosquitto -m 0644 {b}/ca.crt {b}/server.crt {ETC_PEPI}/",
        f"  sudo install -m 0644 {b}/{CONF_NAME} /etc/mosquitto/conf.d/{CONF_NAME}",
        f"  sudo install -o mosquitto -g mosquitto -m 0600 {b}/{BRIDGE_CONF_NAME} "
        f"/etc/mosquitto/conf.d/{BRIDGE_CONF_NAME}",
        "  sudo systemctl restart mosquitto",
        f"  its nodes ({', '.join(spec.nodes)}): copy {logins}/<node>/{PASSWORD_NAME} and ca.crt "
        "to /etc/pepi/, then run, e.g.:",
        f"  pepi node --node-id {spec.nodes[0]} --site {spec.site} --broker "
        f"mqtts://{spec.hosts[0]}:8883 --ca-file /etc/pepi/ca.crt "
        f"--password-file /etc/pepi/{PASSWORD_NAME} ...",
        f"  or on a Pi: sudo deploy/install-pi.sh --node-id {spec.nodes[0]} --site {spec.site} "
        f"--broker mqtts://{spec.hosts[0]}:8883 --ca-file ./ca.crt "
        f"--password-file ./{PASSWORD_NAME} ...",
    ]


def _check_nodes(nodes: Sequence[str], sites: Sequence[SiteSpec] = ()) -> list[str]:
    """The central broker's nodes, once every node id of the rig (central and sites) and
    every site is known to be usable; InitError saying what to change otherwise."""
    named = set(named_users(production_acl()))
    everywhere = [*nodes, *(n for spec in sites for n in spec.nodes)]
    bridges = {bridge_user(spec.site) for spec in sites}
    for spec in sites:
        try:
            validate_site_id(spec.site)
        except PepiError as exc:
            raise InitError(str(exc)) from exc
        if not spec.nodes:
            raise InitError(f"site {spec.site} has no nodes: give --site {spec.site}=cam05,...")
        if not spec.hosts:
            raise InitError(
                f"site {spec.site} has no host: give --site-host {spec.site}=NAME, the name "
                "its nodes use to reach its broker"
            )
    if len({spec.site for spec in sites}) != len(sites):
        raise InitError("a site appears twice in --site")
    for node in everywhere:
        try:
            validate_node_id(node)
        except PepiError as exc:
            raise InitError(str(exc)) from exc
        if node in named:
            raise InitError(f"node id {node!r} is a broker user of its own: rename the node")
        if node in bridges:
            raise InitError(f"node id {node!r} is the login of a site's bridge: rename the node")
    if not everywhere:
        raise InitError("no nodes: give --nodes cam01,cam02,...")
    if len(set(everywhere)) != len(everywhere):
        raise InitError("a node id appears twice in --nodes or --site: node ids are rig-wide")
    return list(nodes)


def _find_mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise InitError(
        "mosquitto_passwd not found: install mosquitto (apt-get install mosquitto) "
        "or run pepi broker init on the broker host"
    )


def _ca(folder: Path, made: list[Path]) -> KeyPair:
    cert, key = folder / "ca.crt", folder / "ca.key"
    if cert.exists() and key.exists():
        return KeyPair(cert.read_bytes(), key.read_bytes())
    if cert.exists() or key.exists():
        raise InitError(f"{folder} holds only half a CA (ca.crt, ca.key): restore it or remove it")
    ca = new_ca("pepi-fleet rig CA")
    _write(key, ca.key_pem, SECRET_MODE, made)
    _write(cert, ca.cert_pem, 0o644, made)
    return ca


def _server(folder: Path, ca: KeyPair, hosts: list[str], made: list[Path]) -> None:
    cert, key = folder / "server.crt", folder / "server.key"
    if cert.exists() and key.exists():
        current = KeyPair(cert.read_bytes(), key.read_bytes()).cert
        if issued_by(current, ca.cert) and sorted(certificate_hosts(current)) == sorted(hosts):
            return
    try:
        server = issue_server(ca, hosts)
    except ValueError as exc:
        raise InitError(f"{exc}: give --host with the broker's name or address") from exc
    _write(key, server.key_pem, SECRET_MODE, made)
    _write(cert, server.cert_pem, 0o644, made)


def _login(folder: Path, ca: KeyPair, client_cert: bool, made: list[Path]) -> str:
    """The user's password (kept if it exists), with the CA and optionally a client cert."""
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / PASSWORD_NAME
    if path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        _write(path, (password + "\n").encode(), SECRET_MODE, made)
    _write(folder / "ca.crt", ca.cert_pem, 0o644, made)
    if client_cert and not (folder / "client.crt").exists():
        issued = issue_client(ca, folder.name)
        _write(folder / "client.key", issued.key_pem, SECRET_MODE, made)
        _write(folder / "client.crt", issued.cert_pem, 0o644, made)
    return password


def _write_password_file(path: Path, passwords: dict[str, str], tool: str) -> None:
    """mosquitto_passwd -U hashes a plain ``user:password`` file in place: no password is
    ever on a command line. The plain file exists only under a temporary name, mode 0600."""
    plain = path.with_name(path.name + ".tmp")
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    try:
        with os.fdopen(fd, "w") as out:
            out.writelines(f"{user}:{password}\n" for user, password in passwords.items())
        result = subprocess.run([tool, "-U", str(plain)], capture_output=True, text=True)
        if result.returncode != 0:
            raise InitError(f"mosquitto_passwd -U failed: {result.stderr.strip()}")
        plain.replace(path)
    finally:
        plain.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int, made: list[Path]) -> None:
    """Write ``data`` (atomically, with ``mode`` from the start) unless it is there already."""
    if path.exists() and path.read_bytes() == data:
        path.chmod(mode)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
    made.append(path)
