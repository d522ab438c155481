"""Exports from a real fleet: the REST zips, the page's links and ``pepi export`` on the
controller's data dir, with the images and EXIF the nodes really wrote."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base
from support.controllers import ControllerProcess
from support.nodes import NodeProcess, node_process
from support.web import controller_process, wait_nodes, wait_ready, wait_set_downloaded

from pepi_fleet.broker.runner import EmbeddedBroker

NODES = {"exp-a": 2, "exp-b": 1}  # node -> cameras
SERIALS = ["exp-a-cam0", "exp-a-cam1", "exp-b-cam0"]
SETS = ["exp-set-1", "exp-set-2"]


@pytest.fixture(scope="module")
def fleet(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControllerProcess]:
    """A two-camera node, a one-camera node and a controller; two sets downloaded."""
    base = tmp_path_factory.mktemp("export")
    root = f"pepi-t/{uuid.uuid4().hex[:10]}"
    nodes: list[NodeProcess] = [
        node_process(broker, root, n, base, "--camera-count", str(count))
        for n, count in NODES.items()
    ]
    controller = controller_process(broker, root, base)
    try:
        for node in nodes:
            node.start()
        wait_ready(controller.start())
        with httpx.Client(base_url=controller.url, timeout=20) as client:
            wait_nodes(client, set(NODES))
            for set_id in SETS:
                res = client.post("/api/captures", json={"capture_id": set_id})
                assert res.status_code == 202, res.text
                wait_set_downloaded(client, set_id, images=sum(NODES.values()))
        yield controller
    finally:
        controller.stop()
        for node in nodes:
            node.stop()


@pytest.fixture
def api(fleet: ControllerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url, timeout=20) as client:
        yield client


def fetch_zip(
    api: httpx.Client, path: str, **params: str
) -> tuple[httpx.Response, dict[str, bytes]]:
    with api.stream("GET", path, params=params) as res:
        data = res.read()
    assert res.status_code == 200, data[:500]
    assert res.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return res, {name: zf.read(name) for name in zf.namelist()}


def serial(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        return str(image.getexif().get_ifd(IFD.Exif)[Base.BodySerialNumber])


def checksums(api: httpx.Client) -> set[str]:
    return {f["sha256"] for s in SETS for f in api.get(f"/api/captures/{s}").json()["files"]}


def test_export_api_meshroom_zip_is_the_rig_layout_of_one_set(api: httpx.Client) -> None:
    res, files = fetch_zip(api, "/api/captures/exp-set-1/export", layout="meshroom")
    assert res.headers["x-pepi-missing-images"] == "0"
    assert 'filename="exp-set-1-meshroom.zip"' in res.headers["content-disposition"]
    top = "exp-set-1-meshroom/"
    images = sorted(n for n in files if n.endswith(".jpeg"))
    assert images == [f"{top}rig/{i}/0001.jpeg" for i in range(3)]
    assert [serial(files[n]) for n in images] == SERIALS  # one serial per physical camera
    assert {hashlib.sha256(files[n]).hexdigest() for n in images} <= checksums(api)
    summary = json.loads(files[f"{top}pepi-export.json"])
    assert summary["layout"] == "meshroom" and summary["notes"] == []
    assert f"{top}manifests/exp-set-1.json" in files


def test_export_api_colmap_zip_of_several_sets_is_one_rig(api: httpx.Client) -> None:
    _res, files = fetch_zip(api, "/api/export", sets=",".join(SETS), layout="colmap")
    top = "exp-set-1-to-exp-set-2-colmap/"
    for s in SERIALS:
        folder = [n for n in files if n.startswith(f"{top}images/{s}/")]
        assert sorted(folder) == [f"{top}images/{s}/0001.jpeg", f"{top}images/{s}/0002.jpeg"]
        assert {serial(files[n]) for n in folder} == {s}
    config = json.loads(files[f"{top}rig_config.json"])
    assert [c["image_prefix"] for c in config[0]["cameras"]] == [f"{s}/" for s in SERIALS]
    assert sum(bool(c.get("ref_sensor")) for c in config[0]["cameras"]) == 1
    summary = json.loads(files[f"{top}pepi-export.json"])
    assert [(f["frame"], f["set_id"]) for f in summary["frames"]] == [(1, SETS[0]), (2, SETS[1])]


def test_export_api_synthetic_images_carry_focal_plane_priors(api: httpx.Client) -> None:
    _res, files = fetch_zip(api, "/api/captures/exp-set-2/export", layout="flat")
    name = "exp-set-2-flat/idexp-a_dexp-set-2_cam1.jpeg"
    with Image.open(io.BytesIO(files[name])) as image:
        width = image.width
        sub = image.getexif().get_ifd(IFD.Exif)
    # the synthetic camera claims the HQ camera's 6.287 mm wide sensor, and no lens
    assert width / (float(sub[Base.FocalPlaneXResolution]) / 10) == pytest.approx(6.287, rel=0.01)
    assert Base.FocalLength not in sub


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/api/captures/no-such-set/export", {"layout": "flat"}, 404),
        ("/api/captures/exp-set-1/export", {"layout": "blender"}, 422),
        ("/api/export", {"sets": "exp-set-1,no-such-set"}, 404),
        ("/api/export", {"sets": "exp-set-1,exp-set-1"}, 422),
        ("/api/export", {"sets": "exp-set-1,../x"}, 422),
        ("/api/export", {"sets": " , "}, 422),
        ("/api/export", {}, 422),
    ],
)
def test_export_api_bad_request_is_a_4xx_with_one_line(
    api: httpx.Client, path: str, params: dict[str, str], code: int
) -> None:
    res = api.get(path, params=params)
    assert res.status_code == code, res.text
    detail = res.json()["detail"]
    assert detail and "\n" not in detail


def test_export_page_links_each_layout_next_to_the_zip(api: httpx.Client) -> None:
    html = api.get("/ui/captures/exp-set-1").text
    assert "Download zip" in html
    for layout in ("meshroom", "colmap", "flat"):
        assert f'href="/api/captures/exp-set-1/export?layout={layout}"' in html


def test_export_cli_reads_the_controllers_data_dir(
    fleet: ControllerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "meshroom"
    cmd = [sys.executable, "-m", "pepi_fleet", "export", *SETS, "--layout", "meshroom"]
    cmd += ["--out", str(out), "--data-dir", str(fleet.data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "exported 6 images of 3 cameras in 2 set(s) as meshroom" in done.stdout
    for index in range(3):
        assert sorted(p.name for p in (out / "rig" / str(index)).iterdir()) == [
            "0001.jpeg",
            "0002.jpeg",
        ]
    source = fleet.data_dir / "exp-set-2" / "idexp-b_dexp-set-2_cam0.jpeg"
    assert (out / "rig" / "2" / "0002.jpeg").stat().st_ino == source.stat().st_ino
