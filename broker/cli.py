"""``pepi broker``: make the production broker's certificates, logins and ACL."""

from __future__ import annotations

from pathlib import Path

import click

from pepi_fleet.broker.access import PRODUCTION_ROOT
from pepi_fleet.broker.init import init_broker_dir, install_steps
from pepi_fleet.schemas.errors import PepiError


@click.group("broker")
def broker_group() -> None:
    """The production broker (mosquitto with TLS, logins and the project's ACL)."""


@broker_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--nodes",
    required=True,
    help="Comma-separated node ids, e.g. cam01,cam02,cam03 (each gets a login).",
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
def init_command(
    directory: Path, nodes: str, hosts: tuple[str, ...], topic_root: str, client_certs: bool
) -> None:
    """Make DIR with a CA, the broker's TLS certificate, a random password per login
    (controller, automation, every node), the password file and the ACL, then print what
    to copy where. Run it again with more nodes or hosts: what exists is kept."""
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        report = init_broker_dir(directory, node_ids, list(hosts), topic_root, client_certs)
    except PepiError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(install_steps(report))
