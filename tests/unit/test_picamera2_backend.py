"""The picamera2 backend against the fake picamera2 (tests/support/fake_picamera2).

Frame selection, timestamps, frame rate read-back, camera sync reporting, settings, preview
thread independence and every official sensor size, on the real clock.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image
from support.fake_camera import eventually, install_fake_picamera2

from pepi_fleet.node.camera import pi_stream, picamera2_backend
from pepi_fleet.node.camera.base import AdjustableCamera, Camera, CapturedFrame
from pepi_fleet.node.camera.picamera2_backend import Picamera2Camera
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService
from pepi_fleet.node.store import CaptureStore, StoreLimits
from pepi_fleet.schemas.camera import CameraSettings, locked_settings
from pepi_fleet.schemas.capture import CaptureCommand, CaptureResult, CaptureStatus
from pepi_fleet.schemas.errors import CameraError

HQ_FAST = (2028, 1080)  # imx477 mode of up to 50 fps


class Rig:
    """The fake module plus the cameras opened on it, closed and checked after the test."""

    def __init__(self, fake: ModuleType) -> None:
        self.fake = fake
        self.opened: list[Picamera2Camera] = []

    def camera(self, resolution: tuple[int, int] = HQ_FAST, fps: float = 30.0, **kw: Any) -> Any:
        camera = Picamera2Camera(resolution, fps, server_heard=lambda _s: False, **kw)
        self.opened.append(camera)
        return camera

    @property
    def sensors(self) -> list[Any]:
        return list(self.fake.RIG.opened)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    holder = Rig(install_fake_picamera2(monkeypatch))
    yield holder
    for camera in holder.opened:
        camera.close()
    for sensor in holder.sensors:
        assert sensor.closed, "a camera was left open"
        assert sensor.held == 0, f"{sensor.held} frame buffer(s) never released"


def use(rig: Rig, **settings: Any) -> None:
    rig.fake.install_rig(**settings)


def mid(frame: CapturedFrame) -> float:
    assert frame.controls is not None and frame.controls.exposure_time_us is not None
    return frame.timestamp + frame.controls.exposure_time_us / 2e6


def period(frame: CapturedFrame) -> float:
    assert frame.controls is not None and frame.controls.frame_duration_us is not None
    return frame.controls.frame_duration_us / 1e6


def test_picamera2_camera_satisfies_both_camera_protocols(rig: Rig) -> None:
    camera: Camera = rig.camera()
    assert isinstance(camera, AdjustableCamera)  # settings can be set and read back
    assert [info.index for info in camera.infos()] == [0]


def test_picamera2_camera_scheduled_capture_keeps_the_frame_nearest_at(rig: Rig) -> None:
    camera = rig.camera()
    at = time.time() + 0.25
    (frame,) = camera.capture([0], "scheduled", at)
    assert abs(mid(frame) - at) <= period(frame) / 2 + 1e-4
    assert frame.pixels.shape == (1080, 2028, 3)
    assert frame.model == "imx477" and frame.make == "Raspberry Pi"


def test_picamera2_camera_scheduled_capture_called_at_at_uses_the_frame_in_hand(rig: Rig) -> None:
    # The capture service calls capture() at `at` itself: the nearest frame may already be
    # delivered (the camera's latest), or be the one being exposed.
    camera = rig.camera()
    eventually(lambda: camera.infos()[0].fps, what="first frames")
    for _ in range(5):
        at = time.time()
        (frame,) = camera.capture([0], "now-at", at)
        assert abs(mid(frame) - at) <= period(frame) / 2 + 1e-4


def test_picamera2_camera_immediate_capture_keeps_the_first_frame_exposed_after_it(
    rig: Rig,
) -> None:
    camera = rig.camera()
    for _ in range(3):
        called = time.time()
        (frame,) = camera.capture([0], "now", None)
        assert called <= frame.timestamp < called + period(frame) + 0.002


@pytest.mark.parametrize(
    "wall_clock",
    [
        {"wall_clock_unit": "us"},
        {"wall_clock_unit": "ns"},
        {"wall_clock_unit": "zero"},
        {"wall_clock_unit": "absent"},
        {"wall_clock_unit": "us", "wall_clock_error_s": 3.0},
    ],
    ids=["FrameWallClock µs", "FrameWallClock ns", "0 = unknown", "absent", "3 s off"],
)
def test_picamera2_camera_timestamps_are_wall_clock_exposure_starts(
    rig: Rig, wall_clock: dict[str, Any]
) -> None:
    use(rig, **wall_clock)
    camera = rig.camera()
    called = time.time()
    (frame,) = camera.capture([0], "stamp", None)
    # the exposure began after the call and, a frame and a readout later, it is delivered
    assert called <= frame.timestamp <= time.time()


def test_picamera2_camera_reads_back_the_frame_rate_the_mode_delivers(rig: Rig) -> None:
    fast = rig.camera(HQ_FAST, fps=30.0)
    assert eventually(lambda: fast.infos()[0].fps) == pytest.approx(30.0, abs=0.01)
    fast.close()
    full = rig.camera((4056, 3040), fps=30.0)  # the HQ camera's full size tops out at 10 fps
    assert eventually(lambda: full.infos()[0].fps) == pytest.approx(10.0, abs=0.01)
    full.set_fps(5.0)
    assert eventually(lambda: full.infos()[0].fps == pytest.approx(5.0, abs=0.01), what="5 fps")


@pytest.mark.parametrize(
    ("model", "size", "preview"),
    [
        ("imx296", (1456, 1088), (640, 478)),
        ("imx477", (4056, 3040), (640, 480)),
        ("imx708", (4608, 2592), (640, 360)),
    ],
    ids=["Global Shutter", "HQ", "Camera Module 3"],
)
def test_picamera2_camera_full_sensor_size_captures_and_previews(
    rig: Rig, model: str, size: tuple[int, int], preview: tuple[int, int]
) -> None:
    use(rig, cameras=[model])
    camera = rig.camera(size, fps=10.0)
    info = camera.infos()[0]
    assert (info.model, info.resolution, info.max_resolution) == (model, size, size)
    (frame,) = camera.capture([0], "full", None)
    assert frame.pixels.shape == (size[1], size[0], 3)
    assert Image.open(io.BytesIO(camera.preview_jpeg(0))).size == preview
    assert Image.open(io.BytesIO(camera.preview_jpeg(0, max_width=320))).size[0] == 320


def test_picamera2_camera_previews_flow_while_a_capture_waits_for_at(rig: Rig) -> None:
    camera = rig.camera()
    at = time.time() + 1.0
    result: list[CapturedFrame] = []
    capture = threading.Thread(target=lambda: result.extend(camera.capture([0], "later", at)))
    capture.start()
    previews = []
    while time.time() < at - 0.4:
        started = time.monotonic()
        previews.append(camera.preview_jpeg(0))
        assert time.monotonic() - started < 0.3, "a preview waited on the pending capture"
        time.sleep(0.05)  # an MJPEG client's pace, roughly
    assert capture.is_alive(), "the capture should still be waiting for its frame"
    assert len(previews) >= 3 and len(set(previews)) >= 2, "previews froze"
    capture.join(timeout=5)
    assert abs(mid(result[0]) - at) <= period(result[0]) / 2 + 1e-4


def test_picamera2_camera_several_cameras_share_one_scheduled_time(rig: Rig) -> None:
    use(rig, cameras=["imx477", "imx708"])
    camera = rig.camera(count=2)
    assert [i.model for i in camera.infos()] == ["imx477", "imx708"]
    at = time.time() + 0.2
    frames = camera.capture([0, 1], "both", at)
    assert [f.camera for f in frames] == [0, 1]
    for frame in frames:
        assert abs(mid(frame) - at) <= period(frame) / 2 + 1e-4


def test_picamera2_camera_set_resolution_restarts_the_stream(rig: Rig) -> None:
    camera = rig.camera()
    camera.set_resolution(1332, 990)
    assert camera.infos()[0].resolution == (1332, 990)
    (frame,) = camera.capture([0], "small", None)
    assert frame.pixels.shape == (990, 1332, 3)
    with pytest.raises(CameraError, match="does not fit"):
        camera.set_resolution(8000, 6000)


def test_picamera2_camera_a_refused_resolution_keeps_the_stream_running(rig: Rig) -> None:
    camera = rig.camera()
    with pytest.raises(CameraError, match="Invalid camera configuration"):
        camera.set_resolution(32, 32)
    assert camera.infos()[0].resolution == HQ_FAST
    assert camera.capture([0], "still-streaming", None)[0].pixels.shape == (1080, 2028, 3)


def test_picamera2_camera_frame_lock_server_reports_sync_and_frames_in_sync(rig: Rig) -> None:
    camera = rig.camera(frame_lock=True, sync_role="server", sync_frames=4)
    assert rig.sensors[0].controls["SyncMode"] == 1
    assert rig.sensors[0].controls["SyncFrames"] == 4
    sync = eventually(lambda: (s := camera.infos()[0].sync) and s.ready and s, what="SyncReady")
    assert sync.mode == "server" and sync.lag_us is not None and sync.timer_us is not None
    (frame,) = camera.capture([0], "locked", None)
    assert frame.in_sync is True


def test_picamera2_camera_frame_lock_client_without_a_server_is_not_in_sync(rig: Rig) -> None:
    camera = rig.camera(frame_lock=True, sync_role="client")
    assert rig.sensors[0].controls["SyncMode"] == 2
    (frame,) = camera.capture([0], "alone", None)
    assert frame.in_sync is False
    sync = camera.infos()[0].sync
    assert sync is not None and (sync.mode, sync.ready, sync.timer_us) == ("client", False, None)


def test_picamera2_camera_frame_lock_client_follows_a_server(rig: Rig) -> None:
    use(rig, sync_server_present=True, client_ready_frames=3)
    camera = rig.camera(frame_lock=True, sync_role="auto")  # hears nothing: becomes server
    assert camera.infos()[0].sync.mode == "server"  # type: ignore[union-attr]
    camera.close()
    heard = Picamera2Camera(HQ_FAST, 30.0, frame_lock=True, server_heard=lambda _s: True)
    rig.opened.append(heard)
    eventually(lambda: heard.infos()[0].sync.ready, what="client SyncReady")  # type: ignore[union-attr]
    assert heard.capture([0], "follow", None)[0].in_sync is True


def test_picamera2_camera_frame_lock_a_two_camera_server_node(rig: Rig) -> None:
    use(rig, cameras=["imx477", "imx477"])
    rig.camera(count=2, frame_lock=True, sync_role="server")
    assert [s.controls["SyncMode"] for s in rig.sensors] == [1, 2]


def test_picamera2_camera_frame_lock_without_libcamera_sync_says_so(rig: Rig) -> None:
    use(rig, sync_supported=False)
    camera = rig.camera(frame_lock=True, sync_role="server")
    sync = camera.infos()[0].sync
    assert sync is not None and sync.mode == "unsupported"
    assert sync.detail is not None and "apt full-upgrade" in sync.detail
    assert "SyncMode" not in rig.sensors[0].controls
    assert camera.capture([0], "unlocked", None)[0].in_sync is None


def test_picamera2_camera_without_frame_lock_reports_no_sync(rig: Rig) -> None:
    camera = rig.camera()
    assert camera.infos()[0].sync is None
    assert camera.capture([0], "free", None)[0].in_sync is None


def test_picamera2_camera_applies_settings_and_reads_them_back(rig: Rig) -> None:
    camera = rig.camera()
    camera.apply_settings(
        CameraSettings(exposure_time_us=8000, analogue_gain=2.5, colour_gains=(1.9, 1.4))
    )
    applied = eventually(
        lambda: (c := camera.read_settings()[0]).exposure_time_us == 8000 and c, what="8 ms"
    )
    assert applied.analogue_gain == 2.5 and applied.colour_gains == (1.9, 1.4)
    assert applied.auto_exposure is False and applied.auto_white_balance is False
    assert camera.infos()[0].controls is not None
    (frame,) = camera.capture([0], "fixed", None)
    assert frame.controls is not None and frame.controls.exposure_time_us == 8000


def test_picamera2_camera_settings_a_camera_cannot_take_change_nothing(rig: Rig) -> None:
    use(rig, cameras=["imx708", "imx477"])  # only the first has a focus motor
    camera = rig.camera(count=2)
    before = [list(s.control_log) for s in rig.sensors]
    with pytest.raises(CameraError, match="focus motor"):
        camera.apply_settings(CameraSettings(af_mode="manual", lens_position=2.0))
    assert [s.control_log for s in rig.sensors] == before


def test_picamera2_camera_focus_on_camera_module_3(rig: Rig) -> None:
    use(rig, cameras=["imx708"])
    camera = rig.camera((2304, 1296))
    camera.apply_settings(CameraSettings(lens_position=2.0))
    focused = eventually(lambda: (c := camera.read_settings()[0]).lens_position == 2.0 and c)
    assert focused.af_mode == "manual"


def test_picamera2_camera_lock_exposure_copies_the_reference_to_every_camera(rig: Rig) -> None:
    use(rig, cameras=["imx477", "imx477"])
    camera = rig.camera(count=2)
    eventually(lambda: all(c.exposure_time_us for c in camera.read_settings()), what="frames")
    before = camera.read_settings()
    assert before[0].exposure_time_us != before[1].exposure_time_us  # auto: each its own
    locked = locked_settings(before[0])
    camera.apply_settings(locked)
    for index in (0, 1):
        read = eventually(
            lambda i=index: (
                (c := camera.read_settings()[i]).auto_exposure is False
                and c.exposure_time_us == locked.exposure_time_us
                and c
            )
        )
        assert (read.exposure_time_us, read.analogue_gain, read.colour_gains) == (
            before[0].exposure_time_us,
            before[0].analogue_gain,
            before[0].colour_gains,
        )


def test_picamera2_camera_a_stalled_camera_fails_the_capture_not_the_node(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pi_stream, "FRAME_TIMEOUT_S", 0.3)
    monkeypatch.setattr(picamera2_backend, "FRAME_TIMEOUT_S", 0.3)
    camera = rig.camera()
    rig.fake.RIG.stalled = True
    with pytest.raises(CameraError, match="gave no frame"):
        camera.capture([0], "stalled", None)
    rig.fake.RIG.stalled = False
    assert camera.capture([0], "recovered", None)[0].pixels.size


def test_picamera2_camera_clear_errors_for_missing_cameras(rig: Rig) -> None:
    with pytest.raises(CameraError, match="libcamera sees 1"):
        rig.camera(count=2)
    camera = rig.camera()
    with pytest.raises(CameraError, match="does not exist"):
        camera.capture([1], "nope", None)
    with pytest.raises(CameraError, match="frame rate"):
        camera.set_fps(0)


def test_picamera2_camera_without_picamera2_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "picamera2", None)
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        Picamera2Camera()


def test_picamera2_camera_behind_the_capture_service_stores_a_scheduled_set(
    rig: Rig, tmp_path: Path
) -> None:
    # The node's one capture path (as over MQTT) with the Pi backend: armed, fired at `at`,
    # encoded with EXIF, stored, reported, on the real clock.
    use(rig, cameras=["imx296", "imx708"])
    camera = rig.camera((1456, 1088), fps=30.0, count=2)
    results: queue.Queue[CaptureResult] = queue.Queue()
    store = CaptureStore(tmp_path / "store", StoreLimits(min_free_bytes=0))
    service = CaptureService("cam01", camera, store, results.put)
    service.start()
    try:
        at = time.time() + 0.3
        command = CaptureCommand(capture_id="scan-001", at=at)
        service.submit(CaptureRequest(command=command, received_at=time.time()))
        result = results.get(timeout=10)
    finally:
        service.stop()
    assert result.status is CaptureStatus.OK, result.error
    assert [(f.camera, f.width, f.height) for f in result.frames] == [
        (0, 1456, 1088),
        (1, 1456, 1088),  # the CM3 scaled to the same size
    ]
    for frame in result.frames:
        assert abs(frame.timestamp - at) < 0.05  # exposure start, within a frame of `at`
    image, _ = store.read_image("scan-001", 0, "jpeg")
    assert Image.open(io.BytesIO(image)).size == (1456, 1088)
