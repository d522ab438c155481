"""Export layouts, checked against what Meshroom and COLMAP document they read.

Meshroom (wiki "Multi Camera Rig", AliceVision cameraInit): a folder whose name starts with
``rig`` holds one folder per camera named by its index 0..n-1; images with the same name
in different camera folders are one pose of the rig; the number in a file name is its frame
id; each camera needs its own EXIF BodySerialNumber.
COLMAP (rigs.rst, ReadRigConfig/ApplyRigConfig): one folder per camera, images of one frame
share a name across folders; ``rig_config.json`` is a list of rigs, each a ``cameras`` list
of ``image_prefix`` (+ exactly one ``ref_sensor``, optional ``cam_from_rig_rotation`` /
``cam_from_rig_translation``, ``camera_model_name`` / ``camera_params``); a frame is the
part of an image name after its camera's prefix; every rig camera must have an image.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from PIL.ExifTags import IFD, Base
from support.capture_sets import write_capture_set

from pepi_fleet.cli import main
from pepi_fleet.controller.export import (
    ExportError,
    ExportSummary,
    load_sets,
    plan_export,
    write_export,
)
from pepi_fleet.controller.zip_stream import stream_zip

RIG = {"node-a": [0, 1], "node-b": [0]}
SERIALS = ["node-a-cam0", "node-a-cam1", "node-b-cam0"]
# AliceVision's sfmDataIO::extractNumberFromFileStem
MESHROOM_FRAME = re.compile(r"^(.*\D)?([0-9]+)([\-_\.].*[a-zA-Z].*)?$")
COLMAP_CAMERA_KEYS = {
    "image_prefix",
    "ref_sensor",
    "cam_from_rig_rotation",
    "cam_from_rig_translation",
    "camera_model_name",
    "camera_params",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three sets of a two-node, three-camera rig."""
    data = tmp_path / "data"
    for frame, set_id in enumerate(["scan-1", "scan-2", "scan-3"]):
        write_capture_set(data, set_id, RIG, frame=frame, size=(96, 72))
    return data


def export(data_dir: Path, out: Path, layout: str, sets: list[str]) -> ExportSummary:
    plan = plan_export(load_sets(data_dir, sets), layout)  # type: ignore[arg-type]
    write_export(plan, out)
    return ExportSummary.model_validate_json((out / "pepi-export.json").read_text())


def serial_of(path: Path) -> str:
    with Image.open(path) as image:
        return str(image.getexif().get_ifd(IFD.Exif)[Base.BodySerialNumber])


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".jpeg", ".png"))


def test_export_flat_is_one_folder_of_every_verified_image(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flat"
    summary = export(data_dir, out, "flat", ["scan-1", "scan-2"])
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix == ".jpeg")
    assert names == sorted(
        f"id{node}_d{s}_cam{cam}.jpeg"
        for s in ("scan-1", "scan-2")
        for node, cams in RIG.items()
        for cam in cams
    )
    assert images_under(out) == sorted(out / n for n in names)  # nothing in sub-folders
    assert (summary.images, summary.missing, summary.notes) == (6, 0, [])
    assert sorted(p.name for p in (out / "manifests").iterdir()) == ["scan-1.json", "scan-2.json"]


def test_export_hard_links_keep_the_bytes_and_cost_no_space(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flat"
    export(data_dir, out, "flat", ["scan-1"])
    source = data_dir / "scan-1" / "idnode-a_dscan-1_cam0.jpeg"
    exported = out / source.name
    assert exported.stat().st_ino == source.stat().st_ino
    assert exported.read_bytes() == source.read_bytes()


def test_export_copy_makes_independent_files(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "copied"
    report = write_export(plan_export(load_sets(data_dir, ["scan-1"]), "flat"), out, copy=True)
    assert (report.linked, report.copied) == (0, 3)
    source = data_dir / "scan-1" / "idnode-a_dscan-1_cam0.jpeg"
    assert (out / source.name).stat().st_ino != source.stat().st_ino
    assert (out / source.name).read_bytes() == source.read_bytes()


def test_export_falls_back_to_copies_across_file_systems(data_dir: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == data_dir.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to export onto")
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        out = Path(elsewhere) / "flat"
        report = write_export(plan_export(load_sets(data_dir, ["scan-1"]), "flat"), out)
        assert (report.linked, report.copied) == (0, 3)
        assert len(images_under(out)) == 3


def test_export_meshroom_is_its_rig_layout(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "meshroom"
    summary = export(data_dir, out, "meshroom", ["scan-1", "scan-2", "scan-3"])
    rig = out / "rig"
    assert rig.name.startswith("rig")  # what cameraInit looks for in the grandparent folder
    folders = sorted((p for p in rig.iterdir()), key=lambda p: int(p.name))
    # sub-pose ids are the folder numbers and must be indexes 0..n-1
    assert [p.name for p in folders] == ["0", "1", "2"]
    frame_ids: dict[str, set[int]] = defaultdict(set)
    serials = []
    for folder in folders:
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["0001.jpeg", "0002.jpeg", "0003.jpeg"]  # one name per set
        for name in names:
            match = MESHROOM_FRAME.match(Path(name).stem)
            assert match is not None
            frame_ids[name].add(int(match.group(2)))
        # every image of a folder comes from one camera; folders have distinct serials
        folder_serials = {serial_of(p) for p in folder.iterdir()}
        assert len(folder_serials) == 1
        serials.append(folder_serials.pop())
    assert sorted(serials) == SERIALS
    assert {name: ids.pop() for name, ids in frame_ids.items()} == {
        "0001.jpeg": 1,
        "0002.jpeg": 2,
        "0003.jpeg": 3,
    }
    assert [(f.frame, f.set_id, f.name) for f in summary.frames] == [
        (1, "scan-1", "0001"),
        (2, "scan-2", "0002"),
        (3, "scan-3", "0003"),
    ]
    assert [(c.folder, c.serial) for c in summary.cameras] == [
        (f"rig/{i}", s) for i, s in enumerate(SERIALS)
    ]


def test_export_meshroom_pose_holds_one_set(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "meshroom"
    export(data_dir, out, "meshroom", ["scan-2", "scan-1"])  # frames in the order given
    for folder in (out / "rig").iterdir():
        with Image.open(folder / "0001.jpeg") as image:
            description = image.getexif()[Base.ImageDescription]
        assert "capture scan-2 " in description


def colmap_frames(image_path: Path, rig_config: list[dict[str, object]]) -> dict[str, set[str]]:
    """Frame name -> the image names in it, as COLMAP's ApplyRigConfig groups them."""
    names = [p.relative_to(image_path).as_posix() for p in images_under(image_path)]
    frames: dict[str, set[str]] = defaultdict(set)
    for rig in rig_config:
        for camera in rig["cameras"]:  # type: ignore[attr-defined]
            prefix = camera["image_prefix"]
            mine = [n for n in names if n.startswith(prefix)]
            assert mine, f"COLMAP needs an image for every rig camera; none for {prefix}"
            for name in mine:
                frames[name.removeprefix(prefix)].add(name)
    return frames


def test_export_colmap_is_its_rig_layout_with_rig_config(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "colmap"
    summary = export(data_dir, out, "colmap", ["scan-1", "scan-2", "scan-3"])
    image_path = out / "images"
    assert sorted(p.name for p in image_path.iterdir()) == SERIALS  # one folder per camera
    for folder in image_path.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["0001.jpeg", "0002.jpeg", "0003.jpeg"]
        assert {serial_of(p) for p in folder.iterdir()} == {folder.name}
    config = json.loads((out / "rig_config.json").read_text())
    assert isinstance(config, list) and len(config) == 1
    cameras = config[0]["cameras"]
    assert [c["image_prefix"] for c in cameras] == [f"{s}/" for s in SERIALS]
    for camera in cameras:
        assert set(camera) <= COLMAP_CAMERA_KEYS
        assert "cam_from_rig_rotation" not in camera  # the rig's geometry is not known
    refs = [c for c in cameras if c.get("ref_sensor")]
    assert len(refs) == 1
    frames = colmap_frames(image_path, config)
    assert sorted(frames) == ["0001.jpeg", "0002.jpeg", "0003.jpeg"]
    assert all(len(images) == 3 for images in frames.values())
    assert [c.folder for c in summary.cameras] == [f"images/{s}" for s in SERIALS]


def test_export_set_with_missing_images_exports_the_rest_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_capture_set(data, "full", RIG, frame=0, size=(96, 72))
    write_capture_set(
        data,
        "gappy",
        RIG,
        frame=1,
        size=(96, 72),
        not_downloaded=frozenset({("node-a", 1)}),
        silent=("node-c",),
    )
    out = tmp_path / "colmap"
    summary = export(data, out, "colmap", ["full", "gappy"])
    assert summary.images == 5
    assert summary.missing == 1
    gappy = summary.frames[1]
    assert gappy.images == 2
    assert gappy.missing == ["node-a-cam1: not downloaded (yet)", "node-c: never answered"]
    assert summary.notes == [
        "set gappy (frame 2) lacks node-a-cam1: not downloaded (yet); node-c: never answered"
    ]
    assert sorted(p.name for p in (out / "images" / "node-a-cam1").iterdir()) == ["0001.jpeg"]
    # the camera with a gap is still in the rig: it has an image in another frame
    frames = colmap_frames(out / "images", json.loads((out / "rig_config.json").read_text()))
    assert {k: len(v) for k, v in frames.items()} == {"0001.jpeg": 3, "0002.jpeg": 2}
    # the reference camera is one with an image in every frame
    ref = next(
        c
        for c in json.loads((out / "rig_config.json").read_text())[0]["cameras"]
        if c.get("ref_sensor")
    )
    assert ref["image_prefix"] != "node-a-cam1/"


def test_export_camera_absent_from_a_whole_export_is_not_in_the_rig(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_capture_set(data, "s", RIG, size=(96, 72), not_downloaded=frozenset({("node-b", 0)}))
    out = tmp_path / "colmap"
    summary = export(data, out, "colmap", ["s"])
    config = json.loads((out / "rig_config.json").read_text())
    assert [c["image_prefix"] for c in config[0]["cameras"]] == ["node-a-cam0/", "node-a-cam1/"]
    assert summary.frames[0].missing == ["node-b-cam0: not downloaded (yet)"]
    assert summary.missing == 1


def test_export_nothing_downloaded_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_capture_set(data, "s", {"n": [0]}, not_downloaded=frozenset({("n", 0)}))
    with pytest.raises(ExportError, match="no downloaded images yet"):
        plan_export(load_sets(data, ["s"]), "flat")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["scan-1", "nope"], "no capture set nope"),
        (["scan-1", "scan-1"], "named twice"),
        (["../etc"], "invalid capture id"),
        ([], "at least one"),
    ],
)
def test_export_bad_set_list_is_an_error(data_dir: Path, sets: list[str], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        load_sets(data_dir, sets)


def test_export_refuses_a_folder_with_files(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "old.jpeg").write_bytes(b"x")
    with pytest.raises(ExportError, match="not an empty folder"):
        write_export(plan_export(load_sets(data_dir, ["scan-1"]), "flat"), out)


def test_export_zip_has_the_same_layout(data_dir: Path, tmp_path: Path) -> None:
    plan = plan_export(load_sets(data_dir, ["scan-1", "scan-2"]), "meshroom")
    out = tmp_path / "dir"
    write_export(plan, out)
    data = b"".join(stream_zip(plan.members()))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        in_zip = sorted(zf.namelist())
        assert zf.read("rig/0/0002.jpeg") == (out / "rig" / "0" / "0002.jpeg").read_bytes()
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert in_zip == on_disk


def test_export_cli_writes_the_layout_and_names_gaps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_capture_set(data, "a", RIG, frame=0, size=(96, 72))
    write_capture_set(
        data, "b", RIG, frame=1, size=(96, 72), not_downloaded=frozenset({("node-b", 0)})
    )
    out = tmp_path / "out"
    args = ["export", "a", "b", "--layout", "colmap", "--out", str(out), "--data-dir", str(data)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "exported 5 images of 3 cameras in 2 set(s) as colmap" in result.stdout
    assert "set b (frame 2) lacks node-b-cam0: not downloaded (yet)" in result.stderr
    assert (out / "rig_config.json").is_file()
    assert os.listdir(out / "images" / "node-b-cam0") == ["0001.jpeg"]


def test_export_cli_unknown_set_is_a_one_line_error(data_dir: Path, tmp_path: Path) -> None:
    args = ["export", "nope", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: no capture set nope in ")
    assert len(result.stderr.strip().splitlines()) == 1
