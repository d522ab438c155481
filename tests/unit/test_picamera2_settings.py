"""Node settings, lock metering and frame sync in results on the picamera2 backend, against
the fake picamera2 (tests/support/fake_picamera2), on the real clock."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base
from support.fake_camera import eventually, install_fake_picamera2

from pepi_fleet.controller.camera_settings import LOCKED_FIELDS, as_node_settings
from pepi_fleet.node.camera.picamera2_backend import Picamera2Camera
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService
from pepi_fleet.node.settings import NodeSettingsApplier
from pepi_fleet.node.store import CaptureStore, StoreLimits
from pepi_fleet.schemas.camera import locked_settings
from pepi_fleet.schemas.capture import CaptureCommand, CaptureResult, CaptureStatus
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.exposure import MeterRequest
from pepi_fleet.schemas.status import NodeSettings

HQ_FAST = (2028, 1080)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return install_fake_picamera2(monkeypatch)


@pytest.fixture
def opened() -> Iterator[list[Picamera2Camera]]:
    cameras: list[Picamera2Camera] = []
    yield cameras
    for camera in cameras:
        camera.close()


def open_camera(opened: list[Picamera2Camera], **kw: object) -> Picamera2Camera:
    camera = Picamera2Camera(HQ_FAST, 30.0, server_heard=lambda _s: False, **kw)  # type: ignore[arg-type]
    opened.append(camera)
    return camera


def capture_once(camera: Picamera2Camera, store_dir: Path, capture_id: str) -> CaptureResult:
    """One immediate capture through the node's capture service, as over MQTT."""
    results: queue.Queue[CaptureResult] = queue.Queue()
    store = CaptureStore(store_dir, StoreLimits(min_free_bytes=0))
    service = CaptureService("cam01", camera, store, results.put)
    service.start()
    try:
        command = CaptureCommand(capture_id=capture_id)
        service.submit(CaptureRequest(command=command, received_at=time.time()))
        return results.get(timeout=10)
    finally:
        service.stop()


def test_picamera2_results_say_frames_were_taken_in_sync(
    fake: ModuleType, opened: list[Picamera2Camera], tmp_path: Path
) -> None:
    camera = open_camera(opened, frame_lock=True, sync_role="server", sync_frames=3)
    eventually(lambda: (s := camera.infos()[0].sync) and s.ready, what="SyncReady")
    result = capture_once(camera, tmp_path / "store", "synced")
    assert result.status is CaptureStatus.OK, result.error
    (frame,) = result.frames
    assert frame.in_sync is True
    assert frame.controls is not None and frame.controls.exposure_time_us
    image, _ = CaptureStore(tmp_path / "store", StoreLimits(min_free_bytes=0)).read_image(
        "synced", 0, "jpeg"
    )
    with Image.open(io.BytesIO(image)) as opened_image:
        exif = opened_image.getexif().get_ifd(IFD.Exif)
    assert Fraction(exif[Base.ExposureTime]) == Fraction(frame.controls.exposure_time_us, 10**6)
    assert b"in_sync=yes" in exif[Base.UserComment]


def test_picamera2_results_of_an_unsynced_client_and_of_no_sync(
    fake: ModuleType, opened: list[Picamera2Camera], tmp_path: Path
) -> None:
    alone = open_camera(opened, frame_lock=True, sync_role="client")
    assert capture_once(alone, tmp_path / "a", "alone").frames[0].in_sync is False
    alone.close()
    free = open_camera(opened)
    assert capture_once(free, tmp_path / "b", "free").frames[0].in_sync is None


def test_picamera2_meter_and_lock_give_every_camera_the_reference_values(
    fake: ModuleType, opened: list[Picamera2Camera]
) -> None:
    fake.install_rig(cameras=["imx477", "imx477"])
    camera = open_camera(opened, count=2)
    applier = NodeSettingsApplier("cam01", camera, lambda _q: None, threading.Event())
    applier.apply(NodeSettings(exposure_time_us=3000, colour_gains=(1.0, 1.0)))
    eventually(lambda: camera.read_settings()[1].exposure_time_us == 3000, what="fixed")

    reading = applier.meter(MeterRequest(request_id="r1", camera=1, settle_s=0.3))
    assert reading.error is None and reading.controls is not None
    settled = reading.controls
    assert settled.auto_exposure and settled.auto_white_balance
    assert settled.exposure_time_us != 3000 and settled.colour_gains != (1.0, 1.0)

    applier.apply(as_node_settings(locked_settings(settled), LOCKED_FIELDS))
    for index in (0, 1):
        read = eventually(
            lambda i=index: (
                (c := camera.read_settings()[i]).exposure_time_us == settled.exposure_time_us
                and not c.auto_white_balance
                and c
            ),
            what=f"camera {index} locked",
        )
        assert (read.analogue_gain, read.colour_gains) == (
            settled.analogue_gain,
            settled.colour_gains,
        )
        assert read.auto_exposure is False
    statuses = [info.controls for info in camera.infos()]
    assert all(c is not None and c.exposure_time_us == settled.exposure_time_us for c in statuses)


def test_picamera2_sync_role_changes_while_running(
    fake: ModuleType, opened: list[Picamera2Camera]
) -> None:
    fake.install_rig(cameras=["imx477", "imx477"])
    camera = open_camera(opened, count=2, frame_lock=True, sync_role="elected", sync_frames=3)
    assert [s.controls["SyncMode"] for s in fake.RIG.opened] == [2, 2]  # clients at first
    camera.set_sync_role("server")
    assert [s.controls["SyncMode"] for s in fake.RIG.opened] == [1, 2]
    sync = eventually(lambda: (s := camera.infos()[0].sync) and s.ready and s, what="SyncReady")
    assert sync.mode == "server"
    assert camera.capture([0], "served", None)[0].in_sync is True
    camera.set_sync_role("client")
    assert [i.sync.mode for i in camera.infos() if i.sync] == ["client", "client"]


def test_picamera2_sync_role_needs_frame_lock(
    fake: ModuleType, opened: list[Picamera2Camera]
) -> None:
    camera = open_camera(opened)
    with pytest.raises(CameraError, match="--frame-lock"):
        camera.set_sync_role("server")
