"""``pepi controller user …`` and ``pepi controller token …``: who may use the web page."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pepi_fleet.controller.access import AccessError, AccessStore, Entry, Role
from pepi_fleet.controller.config import password_from_file

ROLES = click.Choice([r.value for r in Role])
ROLE_HELP = "viewer: see nodes, sets, images, zips, events; operator: also capture and settings."


def read_password_file(path: Path) -> str:
    """The password in ``path`` (its first line, without the line break)."""
    try:
        return password_from_file(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def store_of(options: dict[str, Any]) -> AccessStore:
    """The users and tokens of the controller's ``--data-dir``."""
    data_dir = options.get("data_dir")
    if data_dir is None:
        raise click.UsageError(
            "Missing option '--data-dir' (the controller's, where its users and tokens are "
            "kept): pepi controller --data-dir DIR user|token ..."
        )
    return AccessStore(Path(data_dir))


def print_entries(entries: list[Entry], what: str) -> None:
    if not entries:
        click.echo(f"no {what}s")
        return
    click.echo(f"{'NAME':<24} {'ROLE':<9} CREATED")
    for e in entries:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at))
        click.echo(f"{e.name:<24} {e.role.value:<9} {created}")


def remove_entry(remover: Callable[[str], bool], what: str, name: str, done: str) -> None:
    """Remove the ``what`` (user or token) called ``name``; an unknown name is an error."""
    try:
        removed = remover(name)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    if not removed:
        raise click.ClickException(f"no {what} {name!r}: 'pepi controller {what} list' lists them")
    click.echo(f"{what} {name} {done}", err=True)


@click.group("user")
def user_group() -> None:
    """Web page logins: users with a password and a role (viewer or operator)."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, default=Role.VIEWER.value, show_default=True, help=ROLE_HELP)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the password from this file's first line instead of a prompt.",
)
@click.option("--replace", is_flag=True, help="Set a new password and role for an existing user.")
@click.pass_obj
def user_add(
    options: dict[str, Any], name: str, role: str, password_file: Path | None, replace: bool
) -> None:
    """Add a user; the password is asked for (never given on the command line)."""
    store = store_of(options)
    if password_file is not None:
        password = read_password_file(password_file)
    else:
        password = click.prompt(
            f"Password for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    try:
        store.add_user(name, Role(role), password, replace=replace)
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {name} ({role}) {'updated' if replace else 'added'}", err=True)


@user_group.command("list")
@click.pass_obj
def user_list(options: dict[str, Any]) -> None:
    """List the users and their roles."""
    print_entries(store_of(options).users(), "user")


@user_group.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(options: dict[str, Any], name: str) -> None:
    """Remove a user; a running controller ends their sessions at their next request."""
    remove_entry(store_of(options).remove_user, "user", name, "removed")


@click.group("token")
def token_group() -> None:
    """API tokens for scripts and automations (Authorization: Bearer <token>)."""


@token_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLES, default=Role.VIEWER.value, show_default=True, help=ROLE_HELP)
@click.pass_obj
def token_add(options: dict[str, Any], name: str, role: str) -> None:
    """Create a token and print it, once: only its hash is kept."""
    try:
        token = store_of(options).add_token(name, Role(role))
    except AccessError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {name} ({role}) created; it is shown only now:", err=True)
    click.echo(token)


@token_group.command("list")
@click.pass_obj
def token_list(options: dict[str, Any]) -> None:
    """List the tokens' names and roles (never the tokens)."""
    print_entries(store_of(options).tokens(), "token")


@token_group.command("remove")
@click.argument("name")
@click.pass_obj
def token_remove(options: dict[str, Any], name: str) -> None:
    """Revoke a token, at once, also on a running controller."""
    remove_entry(store_of(options).remove_token, "token", name, "revoked")
