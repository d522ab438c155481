"""``pepi export``: capture sets from the data dir, laid out for a photogrammetry tool."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from pepi_fleet.controller.export import (
    LAYOUTS,
    ExportError,
    Layout,
    load_sets,
    plan_export,
    write_export,
)

NEXT_STEPS: dict[str, list[str]] = {
    "meshroom": ["drop {out}/rig into Meshroom: each numbered folder is one camera of the rig"],
    "colmap": [
        "colmap feature_extractor --image_path {out}/images --database_path {out}/database.db "
        "--ImageReader.single_camera_per_folder 1",
        "then match, reconstruct once without the rig, and colmap rig_configurator "
        "--rig_config_path {out}/rig_config.json --input_path <that model> (COLMAP 3.12+; "
        "README: Exporting for photogrammetry tools)",
    ],
}


@click.command("export")
@click.argument("set_ids", metavar="SET...", nargs=-1, required=True)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="flat",
    show_default=True,
    help="flat: one folder; meshroom: rig/<camera>/<frame>; colmap: images/<camera>/<frame> "
    "plus rig_config.json.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New or empty folder to write the export into.",
)
@click.option(
    "--data-dir",
    envvar="PEPI_DATA_DIR",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The controller's data dir (as given to 'pepi controller').",
)
@click.option(
    "--copy",
    is_flag=True,
    help="Copy the images instead of hard-linking them (for tools that edit files in place).",
)
def export_command(
    set_ids: tuple[str, ...], layout: str, out_dir: Path, data_dir: Path, copy: bool
) -> None:
    """Export capture sets, one frame (rig pose) per set in the order given.

    Only verified images are exported; a set that lacks some still exports what it has,
    and each gap is named here and in pepi-export.json.
    """
    try:
        plan = plan_export(load_sets(data_dir, list(set_ids)), cast(Layout, layout))
        report = write_export(plan, out_dir, copy=copy)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = plan.summary
    for note in summary.notes:
        click.echo(f"warning: {note}", err=True)
    how = f"{report.linked} hard-linked, {report.copied} copied"
    click.echo(
        f"exported {summary.images} images of {len(summary.cameras)} cameras in "
        f"{len(summary.frames)} set(s) as {layout} into {out_dir} ({how})"
    )
    if summary.missing:
        click.echo(f"{summary.missing} image(s) missing: see {out_dir}/pepi-export.json", err=True)
    for step in NEXT_STEPS.get(layout, []):
        click.echo("next: " + step.format(out=out_dir))
