"""The capture path end to end in one process: synthetic camera, real store, collected results."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.clock import T0, ManualClock

from pepi_fleet.node.camera.base import CapturedFrame
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService, CaptureSettings
from pepi_fleet.node.store import CaptureStore, DuplicateCapture, StoreLimits, image_name
from pepi_fleet.schemas.capture import CaptureCommand, CaptureResult, CaptureStatus, auto_capture_id

NODE = "node-a"
TIMEOUT = 10.0


class Results:
    """publish_result that collects results and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.items: list[CaptureResult] = []
        self._cond = threading.Condition()

    def __call__(self, result: CaptureResult) -> None:
        with self._cond:
            self.items.append(result)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = TIMEOUT) -> list[CaptureResult]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"expected {count} results, got {self.items}")
            return list(self.items)

    def by_id(self, capture_id: str) -> list[CaptureResult]:
        with self._cond:
            return [r for r in self.items if r.capture_id == capture_id]


class Rig:
    def __init__(self, tmp_path: Path, limits: StoreLimits, max_armed: int, cameras: int) -> None:
        # the node's wall clock, frozen: immediate captures fire at once, future ones stay armed
        self.clock = ManualClock()
        self.camera = SyntheticCamera(
            NODE, resolution=(64, 48), count=cameras, clock=self.clock, sleep=lambda s: None
        )
        self.store = CaptureStore(tmp_path / "store", limits)
        self.results = Results()
        self.previews: list[bytes] = []
        self.service = CaptureService(
            NODE,
            self.camera,
            self.store,
            self.results,
            publish_preview=self.previews.append,
            settings=CaptureSettings(late_tolerance_s=0.5, max_armed=max_armed),
            clock=self.clock,
        )
        self.service.start()
        self._stopped = False

    def submit(self, command: CaptureCommand, **kwargs: object) -> None:
        request = CaptureRequest(command=command, received_at=self.clock(), **kwargs)  # type: ignore[arg-type]
        self.service.submit(request)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.service.stop()


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[MakeRig]:
    rigs: list[Rig] = []

    def make(limits: StoreLimits | None = None, max_armed: int = 8, cameras: int = 1) -> Rig:
        rig = Rig(tmp_path, limits or StoreLimits(min_free_bytes=0), max_armed, cameras)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig()


def _id_free(store: CaptureStore, capture_id: str) -> bool:
    """Whether a new capture could take the id now (reserved, then let go again)."""
    try:
        store.reserve(capture_id)
    except DuplicateCapture:
        return False
    store.abandon(capture_id)
    return True


def _stored_sha(store: CaptureStore, capture_id: str, camera: int, fmt: str) -> str:
    path = store.root / "captures" / capture_id / image_name(camera, fmt)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_capture_service_immediate_capture_stores_and_reports_ok(make_rig: MakeRig) -> None:
    rig = make_rig(cameras=2)
    rig.submit(CaptureCommand(capture_id="scan-1"))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.OK, result.error
    assert (result.node_id, result.capture_id, result.error) == (NODE, "scan-1", None)
    assert result.received_at == T0
    assert result.fired_at == T0
    assert [f.camera for f in result.frames] == [0, 1]
    stored = rig.store.get("scan-1")
    assert stored is not None
    assert stored.frames == result.frames
    for frame in result.frames:
        assert (frame.width, frame.height, frame.format) == (64, 48, "jpeg")
        assert frame.timestamp >= T0
        assert frame.sha256 == _stored_sha(rig.store, "scan-1", frame.camera, "jpeg")
    # the preview follows the result on the encoder thread
    deadline = time.monotonic() + TIMEOUT
    while not rig.previews and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rig.previews) == 1


def test_capture_service_honours_cameras_and_format(make_rig: MakeRig) -> None:
    rig = make_rig(cameras=3)
    rig.submit(CaptureCommand(capture_id="scan-1", cameras=[2], format="png"))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.OK, result.error
    assert [(f.camera, f.format) for f in result.frames] == [(2, "png")]
    assert result.frames[0].sha256 == _stored_sha(rig.store, "scan-1", 2, "png")


def test_capture_service_id_less_command_gets_auto_id(rig: Rig) -> None:
    rig.submit(CaptureCommand())
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.OK, result.error
    assert result.capture_id == auto_capture_id(T0)
    assert rig.store.get(auto_capture_id(T0)) is not None


def test_capture_service_same_id_again_is_duplicate(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1"))
    rig.results.wait(1)
    first = rig.store.get("scan-1")
    rig.submit(CaptureCommand(capture_id="scan-1"))
    results = rig.results.wait(2)
    assert [r.status for r in results] == [CaptureStatus.OK, CaptureStatus.DUPLICATE]
    assert results[1].error is not None and "already held" in results[1].error
    assert results[1].frames == []
    assert rig.store.get("scan-1") == first
    assert [c.capture_id for c in rig.store.captures()] == ["scan-1"]


def test_capture_service_duplicate_while_first_still_armed(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1", at=T0 + 3600))
    rig.submit(CaptureCommand(capture_id="scan-1", at=T0 + 3600))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.DUPLICATE


def test_capture_service_recapture_keeps_old_as_r1(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="1"))
    rig.results.wait(1)
    old = rig.store.get("1")
    assert old is not None
    rig.submit(CaptureCommand(capture_id="1"), source="thrift", recapture=True)
    results = rig.results.wait(2)
    assert results[1].status is CaptureStatus.OK, results[1].error
    assert results[1].source == "thrift"
    kept = rig.store.get("1.r1")
    assert kept is not None
    assert kept.frames == old.frames
    new = rig.store.get("1")
    assert new is not None and new.source == "thrift"
    assert new.frames == results[1].frames


def test_capture_service_past_at_beyond_tolerance_is_late_and_stores_nothing(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1", at=T0 - 5.0))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.LATE
    assert result.error is not None and "tolerance" in result.error
    assert result.fired_at is None
    assert result.at == T0 - 5.0
    assert rig.store.captures() == []
    assert _id_free(rig.store, "scan-1")


def test_capture_service_past_at_within_tolerance_fires(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1", at=T0 - 0.2))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.OK, result.error


def test_capture_service_expired_message_is_late(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1"), expires_at=T0 - 1.0)
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.LATE
    assert result.error is not None and "expiry" in result.error
    assert rig.store.captures() == []


def test_capture_service_retained_trigger_is_late(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1"), retained=True)
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.LATE
    assert result.error is not None and "retained" in result.error
    assert rig.store.captures() == []
    assert _id_free(rig.store, "scan-1")


def test_capture_service_busy_when_too_many_armed(make_rig: MakeRig) -> None:
    rig = make_rig(max_armed=2)
    rig.submit(CaptureCommand(capture_id="a", at=T0 + 3600))
    rig.submit(CaptureCommand(capture_id="b", at=T0 + 3600))
    rig.submit(CaptureCommand(capture_id="c", at=T0 + 3600))
    (result,) = rig.results.wait(1)
    assert (result.capture_id, result.status) == ("c", CaptureStatus.BUSY)
    assert result.error is not None and "armed" in result.error
    assert _id_free(rig.store, "c")
    assert not _id_free(rig.store, "a") and not _id_free(rig.store, "b")


def test_capture_service_store_full_with_tiny_limit(make_rig: MakeRig) -> None:
    rig = make_rig(limits=StoreLimits(max_bytes=100, min_free_bytes=0))
    rig.submit(CaptureCommand(capture_id="scan-1"))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.STORE_FULL
    assert result.error is not None and "store full" in result.error
    assert result.frames == []
    assert rig.store.captures() == []
    assert _id_free(rig.store, "scan-1")
    assert list((rig.store.root / "captures").iterdir()) == []


def test_capture_service_store_full_refused_before_arming(make_rig: MakeRig) -> None:
    rig = make_rig(limits=StoreLimits(max_bytes=1 << 40, min_free_bytes=1 << 62))
    rig.submit(CaptureCommand(capture_id="scan-1", at=T0 + 3600))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.STORE_FULL
    assert _id_free(rig.store, "scan-1")


def test_capture_service_stop_reports_armed_captures_and_releases_them(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="a", at=T0 + 3600))
    rig.submit(CaptureCommand(capture_id="b", at=T0 + 7200))
    assert not _id_free(rig.store, "a")
    rig.stop()
    results = rig.results.wait(2)
    assert sorted(r.capture_id or "" for r in results) == ["a", "b"]
    for r in results:
        assert r.status is CaptureStatus.ERROR
        assert r.error is not None and "stopping" in r.error
    assert _id_free(rig.store, "a") and _id_free(rig.store, "b")
    assert rig.store.captures() == []
    rig.store.reserve("a")  # the id is free again


def test_capture_service_camera_error_is_reported_and_frees_the_id(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1", cameras=[5]))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.ERROR
    assert result.error is not None and "camera" in result.error
    assert _id_free(rig.store, "scan-1")
    rig.submit(CaptureCommand(capture_id="scan-1"))
    results = rig.results.wait(2)
    assert results[1].status is CaptureStatus.OK, results[1].error


def test_capture_service_results_in_submission_order(rig: Rig) -> None:
    ids = [f"scan-{n}" for n in range(5)]
    for capture_id in ids:
        rig.submit(CaptureCommand(capture_id=capture_id))
    results = rig.results.wait(len(ids))
    assert [r.capture_id for r in results] == ids
    assert all(r.status is CaptureStatus.OK for r in results)


# -- hardening (issue 9): nothing a command or a camera does ends the capture path ----------


class BrokenCamera:
    """The rig's camera, except that ``capture`` fails with ``error`` for ``capture_id``."""

    def __init__(self, inner: SyntheticCamera, capture_id: str, error: Exception) -> None:
        self.inner = inner
        self.capture_id = capture_id
        self.error = error

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        if capture_id == self.capture_id:
            raise self.error
        return self.inner.capture(cameras, capture_id, at)


class BadPixelsCamera(BrokenCamera):
    """Frames the encoder cannot encode (float pixels): the encoder thread must survive it."""

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        frames = self.inner.capture(cameras, capture_id, at)
        if capture_id != self.capture_id:
            return frames
        return [dataclasses.replace(f, pixels=f.pixels.astype("float64")) for f in frames]


@pytest.mark.parametrize(
    "error", [RuntimeError("driver hiccup"), OverflowError("sleep length is too large")]
)
def test_capture_service_foreign_camera_exception_is_error_result_and_thread_survives(
    rig: Rig, error: Exception
) -> None:
    rig.service.camera = BrokenCamera(rig.camera, "bad", error)  # type: ignore[assignment]
    rig.submit(CaptureCommand(capture_id="bad"))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.ERROR
    assert result.error is not None and type(error).__name__ in result.error
    assert _id_free(rig.store, "bad")
    rig.submit(CaptureCommand(capture_id="after"))
    assert rig.results.wait(2)[1].status is CaptureStatus.OK
    assert rig.service.alive


def test_capture_service_encoder_failure_is_error_result_and_encoder_survives(rig: Rig) -> None:
    rig.service.camera = BadPixelsCamera(rig.camera, "bad", RuntimeError())  # type: ignore[assignment]
    rig.submit(CaptureCommand(capture_id="bad"))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.ERROR and result.error
    assert _id_free(rig.store, "bad") and rig.store.get("bad") is None
    rig.submit(CaptureCommand(capture_id="after"))
    assert rig.results.wait(2)[1].status is CaptureStatus.OK
    assert rig.service.encoder.alive


@pytest.mark.parametrize("at", [T0 + 2 * 86400.0, T0 + 1e9, 1e300, math.inf, math.nan])
def test_capture_service_at_beyond_horizon_is_error_and_not_armed(rig: Rig, at: float) -> None:
    # model_construct: the service holds even where the schema (which refuses most of
    # these) was bypassed
    rig.submit(CaptureCommand.model_construct(capture_id="far", at=at, cameras=None))
    (result,) = rig.results.wait(1)
    assert result.status is CaptureStatus.ERROR
    assert result.error is not None
    assert "at too far ahead" in result.error or "finite" in result.error
    assert _id_free(rig.store, "far")
    rig.submit(CaptureCommand(capture_id="now"))
    assert rig.results.wait(2)[1].status is CaptureStatus.OK


def test_capture_service_released_id_is_still_duplicate(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1"))
    assert rig.results.wait(1)[0].status is CaptureStatus.OK
    assert rig.store.release("scan-1")
    rig.submit(CaptureCommand(capture_id="scan-1"))
    result = rig.results.wait(2)[1]
    assert result.status is CaptureStatus.DUPLICATE
    assert result.error is not None and "already taken" in result.error
    assert "empty payload" in result.error and "new capture_id" in result.error
    assert rig.store.captures() == [] and _id_free(rig.store, "scan-1")


def test_capture_service_duplicate_token_says_what_to_send_instead(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="PRESS"), token=True)
    assert rig.results.wait(1)[0].status is CaptureStatus.OK
    rig.submit(CaptureCommand(capture_id="PRESS"), token=True)
    result = rig.results.wait(2)[1]
    assert result.status is CaptureStatus.DUPLICATE
    assert result.error is not None and "PRESS" in result.error
    assert "empty payload" in result.error and "new id" in result.error


def test_capture_service_thrift_recapture_of_released_id_still_works(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="1"), source="thrift", recapture=True)
    assert rig.results.wait(1)[0].status is CaptureStatus.OK
    assert rig.store.release("1")
    rig.submit(CaptureCommand(capture_id="1"), source="thrift", recapture=True)
    assert rig.results.wait(2)[1].status is CaptureStatus.OK
    assert rig.store.get("1") is not None


def test_capture_service_result_records_remaining_expiry(rig: Rig) -> None:
    rig.submit(CaptureCommand(capture_id="scan-1"), expires_at=T0 + 2, expiry_s=2.0)
    (ok,) = rig.results.wait(1)
    rig.submit(CaptureCommand(capture_id="scan-1"), expires_at=T0 + 1, expiry_s=1.0)
    duplicate = rig.results.wait(2)[1]
    assert (ok.status, ok.expiry_remaining_s) == (CaptureStatus.OK, 2.0)
    assert (duplicate.status, duplicate.expiry_remaining_s) == (CaptureStatus.DUPLICATE, 1.0)
