"""The ``pepi`` command: one group whose sub-commands import their side only when run.

``pepi node`` on a Pi loads the node agent and nothing of the controller or the web stack;
``pepi controller`` loads FastAPI and uvicorn. ``pepi-node`` is ``pepi node`` for Pi images
that install only the node.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

import click

# name -> "module:attribute" of the click command, imported on first use
LAZY_COMMANDS: dict[str, str] = {
    "node": "pepi_fleet.node.cli:node_command",
    "doctor": "pepi_fleet.node.doctor:doctor_command",
    "controller": "pepi_fleet.controller.commands:controller_command",
    "nodes": "pepi_fleet.controller.commands:nodes_command",
    "capture": "pepi_fleet.controller.commands:capture_command",
    "settings": "pepi_fleet.controller.settings_cli:settings_command",
    "demo": "pepi_fleet.controller.demo:demo_command",
    "export": "pepi_fleet.controller.export_cli:export_command",
    "broker": "pepi_fleet.broker.cli:broker_group",
}


class LazyGroup(click.Group):
    """A click group that imports a sub-command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


def setup_logging(verbose: int) -> None:
    """Log to stderr: warnings by default, -v info, -vv debug."""
    logging.basicConfig(
        level=max(logging.WARNING - 10 * verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """pepi-fleet: synchronised multi-camera capture over MQTT, images over PEPI's Thrift."""
    setup_logging(verbose)


@main.command("schemas")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write one <Model>.schema.json per MQTT payload into.",
)
def schemas_command(out_dir: Path) -> None:
    """Write the JSON Schemas of every MQTT payload."""
    from pepi_fleet.schemas.export import write_json_schemas

    for path in write_json_schemas(out_dir):
        click.echo(str(path))


_VERBOSE = re.compile(r"^(-v+|--verbose)$")


def node_main() -> None:
    """``pepi-node [-v] OPTIONS``: the same as ``pepi [-v] node OPTIONS``."""
    args = sys.argv[1:]
    leading = 0
    while leading < len(args) and _VERBOSE.match(args[leading]):
        leading += 1
    main(args=[*args[:leading], "node", *args[leading:]], prog_name="pepi-node")
