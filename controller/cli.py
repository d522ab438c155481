"""The ``pepi`` command: one group, each subcommand defined next to what it drives."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from controller.commands import capture_command, controller_command, nodes_command
from controller.demo import demo_command
from node_agent.cli import node_command
from schemas.export import write_json_schemas


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """pepi-fleet: synchronised multi-camera capture over MQTT, images over PEPI's Thrift."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    for path in write_json_schemas(out_dir):
        click.echo(str(path))


for _command in (node_command, controller_command, nodes_command, capture_command, demo_command):
    main.add_command(_command)


if __name__ == "__main__":
    main()
