"""``pepi broker``: make the production broker's certificates, logins and ACL."""

from __future__ import annotations

from pathlib import Path

import click

from pepi_fleet.broker.access import PRODUCTION_ROOT
from pepi_fleet.broker.bridge import SiteSpec, parse_site_option
from pepi_fleet.broker.init import init_broker_dir, install_steps
from pepi_fleet.schemas.errors import PepiError


@click.group("broker")
def broker_group() -> None:
    """The production broker (mosquitto with TLS, logins and the project's ACL)."""


@broker_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--nodes",
    default="",
    help="Comma-separated ids of the nodes on this (central) broker, e.g. cam01,cam02,cam03 "
    "(each gets a login).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A name or address clients use to reach the broker (repeat for several); "
    "the server certificate is valid for exactly these.",
)
@click.option(
    "--topic-root",
    default=PRODUCTION_ROOT,
    show_default=True,
    help="MQTT topic root the ACL is written for.",
)
@click.option(
    "--client-certs/--no-client-certs",
    default=False,
    show_default=True,
    help="Also make a client certificate per login (CN = username) for clients that "
    "authenticate by certificate.",
)
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="SITE=NODES",
    help="A site with a broker of its own, bridged to this one, and its nodes, e.g. "
    "north=cam05,cam06 (repeat per site). Writes DIR/sites/SITE/broker with the bridge.",
)
@click.option(
    "--site-host",
    "site_hosts",
    multiple=True,
    metavar="SITE=HOST",
    help="A name or address a site's nodes use to reach its broker (repeat for several); "
    "its certificate is valid for exactly these.",
)
@click.option(
    "--central-address",
    default=None,
    metavar="HOST:PORT",
    help="Where the sites' bridges reach this broker's TLS listener [default: the first "
    "--host, port 8883].",
)
def init_command(
    directory: Path,
    nodes: str,
    hosts: tuple[str, ...],
    topic_root: str,
    client_certs: bool,
    sites: tuple[str, ...],
    site_hosts: tuple[str, ...],
    central_address: str | None,
) -> None:
    """Make DIR with a CA, the broker's TLS certificate, a random password per login
    (controller, automation, every node, every site's bridge), the password file and the
    ACL, and for each --site a broker of its own bridged to this one; then print what to
    copy where. Run it again with more nodes, sites or hosts: what exists is kept."""
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        specs = site_specs(sites, site_hosts)
        report = init_broker_dir(
            directory,
            node_ids,
            list(hosts),
            topic_root,
            client_certs,
            sites=specs,
            central_address=central_address,
        )
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(install_steps(report))


def site_specs(sites: tuple[str, ...], site_hosts: tuple[str, ...]) -> list[SiteSpec]:
    """``--site north=cam05,cam06`` and ``--site-host north=gw-north`` as SiteSpecs."""
    parsed = [parse_site_option(value) for value in sites]
    hosts: dict[str, list[str]] = {}
    known = {site for site, _ in parsed}
    for value in site_hosts:
        site, sep, host = value.partition("=")
        if not sep or not host.strip():
            raise PepiError(f"--site-host {value!r}: write SITE=HOST, e.g. north=gw-north")
        if site not in known:
            raise PepiError(f"--site-host {value!r}: no --site {site}=... names that site")
        hosts.setdefault(site, []).append(host.strip())
    return [SiteSpec(site, tuple(nodes), tuple(hosts.get(site, ()))) for site, nodes in parsed]
