"""A COLMAP export read by the real COLMAP: every image accepted, one camera per folder,
focal-length priors from the nodes' EXIF (and, on COLMAP 3.12+, the rig config applied)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest
from support.capture_sets import write_capture_set

from pepi_fleet.controller.export import load_sets, plan_export, write_export

COLMAP = shutil.which("colmap")
pytestmark = pytest.mark.skipif(
    COLMAP is None,
    reason="COLMAP is not installed (Debian: apt-get install colmap; ./run.sh setup adds it)",
)
RIG = {"col-a": [0, 1], "col-b": [0]}
SETS = ["col-1", "col-2", "col-3"]
SIZE = (320, 240)


def colmap(*args: str) -> str:
    """Run ``colmap`` headless; its output, failing the test with it on a non-zero exit."""
    assert COLMAP is not None
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [COLMAP, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert out.returncode == 0, (
        f"colmap {args[0]} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    )
    return out.stdout + out.stderr


def extraction_options() -> list[str]:
    """CPU only, one thread; the option group was renamed in COLMAP 3.13."""
    group = (
        "FeatureExtraction"
        if "FeatureExtraction.use_gpu" in colmap("feature_extractor", "-h")
        else "SiftExtraction"
    )
    return [f"--{group}.use_gpu", "0", f"--{group}.num_threads", "1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sets of three Camera Module 3 cameras on two nodes, exported for COLMAP."""
    base = tmp_path_factory.mktemp("colmap")
    data = base / "data"
    for frame, set_id in enumerate(SETS):
        write_capture_set(data, set_id, RIG, frame=frame, size=SIZE, model="imx708")
    out = base / "export"
    write_export(plan_export(load_sets(data, SETS), "colmap"), out)
    return out


@pytest.fixture(scope="module")
def database(exported: Path) -> Path:
    db = exported / "database.db"
    colmap(
        "feature_extractor",
        "--image_path",
        str(exported / "images"),
        "--database_path",
        str(db),
        "--ImageReader.single_camera_per_folder",
        "1",
        *extraction_options(),
    )
    return db


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_export_colmap_feature_extractor_accepts_every_image(database: Path) -> None:
    names = sorted(str(r[0]) for r in rows(database, "SELECT name FROM images"))
    assert names == sorted(
        f"{node}-cam{cam}/{frame:04d}.jpeg"
        for node, cams in RIG.items()
        for cam in cams
        for frame in range(1, len(SETS) + 1)
    )
    with_features = rows(database, "SELECT COUNT(*) FROM keypoints WHERE rows > 0")[0][0]
    assert with_features == len(names)


def test_export_colmap_one_camera_per_folder_with_the_exif_focal_prior(database: Path) -> None:
    cameras = rows(
        database, "SELECT camera_id, width, height, params, prior_focal_length FROM cameras"
    )
    assert len(cameras) == 3
    # a 4:3 frame of the 16:9 IMX708 shows 3456 x 2592 sensor pixels of 1.4 um: f = 4.74 mm
    expected_px = 4.74 / (3456 * 0.0014 / SIZE[0])
    for _id, width, height, params, prior in cameras:
        assert (width, height) == SIZE
        assert prior == 1, "COLMAP found no focal length in the EXIF"
        focal = struct.unpack_from("<d", params)[0]  # type: ignore[arg-type]
        assert focal == pytest.approx(expected_px, rel=0.05)


def test_export_colmap_rig_configurator_builds_one_rig_frame_per_set(
    exported: Path, database: Path
) -> None:
    if "rig_configurator" not in colmap("help"):
        pytest.skip("this COLMAP has no rig_configurator (rig support is COLMAP 3.12+)")
    colmap(
        "rig_configurator",
        "--database_path",
        str(database),
        "--rig_config_path",
        str(exported / "rig_config.json"),
    )
    assert rows(database, "SELECT COUNT(*) FROM rigs")[0][0] == 1
    assert rows(database, "SELECT COUNT(*) FROM frames")[0][0] == len(SETS)
    assert rows(database, "SELECT COUNT(*) FROM rig_sensors")[0][0] == 2  # besides the ref
