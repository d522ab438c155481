"""The node's capture store on real files: atomic commits, restarts, limits, eviction, waits."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.encode import encode_frame
from pepi_fleet.node.store import (
    META_NAME,
    CaptureNotFound,
    CaptureStore,
    DuplicateCapture,
    StoredCapture,
    StoreFull,
    StoreLimits,
    image_name,
)
from pepi_fleet.schemas.capture import Frame, ImageFormat
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.ids import is_capture_id

T0 = 1_763_712_000.0
NODE = "node-a"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_DISK_RESERVE = StoreLimits(max_bytes=10**12, min_free_bytes=0)


def make_capture(
    capture_id: str,
    fmt: ImageFormat = "jpeg",
    cameras: int = 1,
    stored_at: float = T0,
) -> tuple[StoredCapture, dict[int, bytes]]:
    """A real capture: synthetic frames encoded as the capture service does."""
    camera = SyntheticCamera(
        NODE, resolution=(64, 48), count=cameras, clock=lambda: T0, sleep=lambda s: None
    )
    images: dict[int, bytes] = {}
    frames: list[Frame] = []
    for captured in camera.capture(list(range(cameras)), capture_id, None):
        encoded = encode_frame(captured, fmt, node_id=NODE, capture_id=capture_id)
        images[captured.camera] = encoded.data
        frames.append(
            Frame(
                camera=captured.camera,
                timestamp=captured.timestamp,
                width=encoded.width,
                height=encoded.height,
                format=fmt,
                bytes=len(encoded.data),
                sha256=encoded.sha256,
            )
        )
    capture = StoredCapture(
        capture_id=capture_id,
        received_at=T0,
        fired_at=T0 + 0.01,
        frames=frames,
        stored_at=stored_at,
    )
    return capture, images


def put(store: CaptureStore, capture_id: str, **kwargs: object) -> StoredCapture:
    capture, images = make_capture(capture_id, **kwargs)  # type: ignore[arg-type]
    store.reserve(capture_id)
    store.commit(capture, images)
    return capture


@pytest.fixture
def store(tmp_path: Path) -> CaptureStore:
    return CaptureStore(tmp_path / "store", NO_DISK_RESERVE)


def _ids(store: CaptureStore) -> list[str]:
    return [c.capture_id for c in store.captures()]


# -- reserve / commit / get ---------------------------------------------------------------------


def test_store_commit_then_get_and_list(store: CaptureStore) -> None:
    capture, images = make_capture("scan-1", cameras=2)
    store.reserve("scan-1")
    with pytest.raises(CaptureNotFound, match="still in progress"):
        store.wait_for("scan-1", timeout=0.01)
    assert store.get("scan-1") is None
    store.commit(capture, images)
    assert store.wait_for("scan-1", timeout=0) == capture
    assert store.get("scan-1") == capture
    assert _ids(store) == ["scan-1"]
    folder = store.root / "captures" / "scan-1"
    for frame in capture.frames:
        data = (folder / image_name(frame.camera, frame.format)).read_bytes()
        assert data == images[frame.camera]
        assert hashlib.sha256(data).hexdigest() == frame.sha256


def test_store_captures_are_oldest_first(store: CaptureStore) -> None:
    put(store, "late", stored_at=T0 + 2)
    put(store, "early", stored_at=T0)
    put(store, "middle", stored_at=T0 + 1)
    assert _ids(store) == ["early", "middle", "late"]


def test_store_reserve_held_id_is_duplicate(store: CaptureStore) -> None:
    put(store, "scan-1")
    with pytest.raises(DuplicateCapture, match="scan-1"):
        store.reserve("scan-1")
    assert _ids(store) == ["scan-1"]


def test_store_reserve_pending_id_is_duplicate(store: CaptureStore) -> None:
    store.reserve("scan-1")
    with pytest.raises(DuplicateCapture, match="scan-1"):
        store.reserve("scan-1")


def test_store_abandon_frees_the_id(store: CaptureStore) -> None:
    store.reserve("scan-1")
    store.abandon("scan-1")
    with pytest.raises(CaptureNotFound, match="no images"):
        store.wait_for("scan-1", timeout=30)
    store.reserve("scan-1")


@pytest.mark.parametrize("capture_id", ["../x", "a/b", ".hidden", "x" * 65])
def test_store_reserve_refuses_unsafe_ids(store: CaptureStore, capture_id: str) -> None:
    with pytest.raises(PayloadError):
        store.reserve(capture_id)


# -- atomicity and restarts ---------------------------------------------------------------------


def test_store_crash_leftovers_in_staging_are_cleaned_on_reopen(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    put(store, "kept")
    # A crash mid-commit leaves a fully written folder in staging, never renamed.
    capture, images = make_capture("half")
    stray = root / "staging" / "half-deadbeef"
    stray.mkdir()
    (stray / "cam0.jpeg").write_bytes(images[0])
    (stray / META_NAME).write_text(capture.model_dump_json())
    (root / "staging" / "deleted-old-12345678").mkdir()

    reopened = CaptureStore(root, NO_DISK_RESERVE)
    assert list((root / "staging").iterdir()) == []
    assert _ids(reopened) == ["kept"]
    assert reopened.get("half") is None
    reopened.reserve("half")  # the id is free to be taken properly


def test_store_failed_commit_leaves_no_capture_and_frees_the_id(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    capture, images = make_capture("scan-1", cameras=2)
    store.reserve("scan-1")
    with pytest.raises(KeyError):
        store.commit(capture, {0: images[0]})  # camera 1's image is missing
    assert store.get("scan-1") is None
    with pytest.raises(CaptureNotFound, match="no images"):
        store.wait_for("scan-1", timeout=30)
    assert list((root / "captures").iterdir()) == []
    reopened = CaptureStore(root, NO_DISK_RESERVE)
    assert reopened.captures() == []
    assert list((root / "staging").iterdir()) == []


def test_store_reopened_holds_the_same_captures(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    first = put(store, "scan-1", stored_at=T0)
    second = put(store, "scan-2", fmt="png", cameras=2, stored_at=T0 + 1)
    before = store.info()

    reopened = CaptureStore(root, NO_DISK_RESERVE)
    assert reopened.captures() == [first, second]
    after = reopened.info()
    # free_bytes follows the disk, which other processes change meanwhile
    assert (after.captures, after.bytes) == (before.captures, before.bytes)
    data, frame = reopened.read_image("scan-2", 1, "png")
    assert frame == second.frames[1]
    assert hashlib.sha256(data).hexdigest() == frame.sha256


def test_store_ignores_unreadable_capture_folders(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    capture = put(store, "good")
    (root / "captures" / "no-meta").mkdir()
    bad = root / "captures" / "bad-meta"
    bad.mkdir()
    (bad / META_NAME).write_text("{not json")
    renamed = root / "captures" / "other-name"
    renamed.mkdir()
    (renamed / META_NAME).write_text(capture.model_dump_json())

    reopened = CaptureStore(root, NO_DISK_RESERVE)
    assert _ids(reopened) == ["good"]


# -- rename aside -------------------------------------------------------------------------------


def test_store_rename_aside_keeps_old_capture_as_r1_then_r2(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    first = put(store, "1", stored_at=T0)
    assert store.rename_aside("1") == "1.r1"
    assert store.get("1") is None
    kept = store.get("1.r1")
    assert kept is not None
    assert kept.frames == first.frames
    second = put(store, "1", stored_at=T0 + 1)
    assert store.rename_aside("1") == "1.r2"
    third = put(store, "1", stored_at=T0 + 2)
    assert _ids(store) == ["1.r1", "1.r2", "1"]
    assert store.get("1") == third

    reopened = CaptureStore(root, NO_DISK_RESERVE)
    assert _ids(reopened) == ["1.r1", "1.r2", "1"]
    r2 = reopened.get("1.r2")
    assert r2 is not None
    assert r2.frames == second.frames
    data, _ = reopened.read_image("1.r1", 0, "jpeg")
    assert hashlib.sha256(data).hexdigest() == first.frames[0].sha256


def test_store_rename_aside_long_ids_stay_valid(store: CaptureStore) -> None:
    long_id = "L" * 64
    put(store, long_id)
    r1 = store.rename_aside(long_id)
    put(store, long_id)
    r2 = store.rename_aside(long_id)
    assert (r1, r2) == ("L" * 61 + ".r1", "L" * 61 + ".r2")
    for new_id in (r1, r2):
        assert len(new_id) <= 64
        assert is_capture_id(new_id)
    assert sorted(_ids(store)) == sorted([r1, r2])


def test_store_rename_aside_unknown_id_is_not_found(store: CaptureStore) -> None:
    with pytest.raises(CaptureNotFound):
        store.rename_aside("nothing")


# -- limits and eviction ------------------------------------------------------------------------


def _capture_size(tmp_path: Path) -> int:
    """Bytes one raw capture (image + metadata) takes; raw sizes do not vary with content."""
    probe = CaptureStore(tmp_path / "probe", NO_DISK_RESERVE)
    put(probe, "cap-0", fmt="raw")
    return probe.info().bytes


def _two_capture_store(tmp_path: Path, evict: bool) -> CaptureStore:
    size = _capture_size(tmp_path)
    limits = StoreLimits(max_bytes=2 * size + size // 2, min_free_bytes=0, evict_retrieved=evict)
    return CaptureStore(tmp_path / "store", limits)


def test_store_full_by_bytes_refuses_and_keeps_earlier(tmp_path: Path) -> None:
    store = _two_capture_store(tmp_path, evict=False)
    a = put(store, "cap-a", fmt="raw")
    b = put(store, "cap-b", fmt="raw")
    with pytest.raises(StoreFull, match="store full"):
        put(store, "cap-c", fmt="raw")
    assert store.captures() == [a, b]
    with pytest.raises(CaptureNotFound, match="no images"):
        store.wait_for("cap-c", timeout=30)
    assert store.get("cap-c") is None
    with pytest.raises(StoreFull):
        store.check_space(1 << 20)


def test_store_full_refuses_even_with_retrieved_when_eviction_off(tmp_path: Path) -> None:
    store = _two_capture_store(tmp_path, evict=False)
    put(store, "cap-a", fmt="raw")
    put(store, "cap-b", fmt="raw")
    store.read_image("cap-a", 0, "raw")
    with pytest.raises(StoreFull):
        put(store, "cap-c", fmt="raw")
    assert _ids(store) == ["cap-a", "cap-b"]


def test_store_evicts_oldest_retrieved_capture(tmp_path: Path) -> None:
    store = _two_capture_store(tmp_path, evict=True)
    put(store, "cap-a", fmt="raw", stored_at=T0)
    put(store, "cap-b", fmt="raw", stored_at=T0 + 1)
    store.read_image("cap-b", 0, "raw")
    store.read_image("cap-a", 0, "raw")
    put(store, "cap-c", fmt="raw", stored_at=T0 + 2)
    assert _ids(store) == ["cap-b", "cap-c"]
    assert not (store.root / "captures" / "cap-a").exists()
    put(store, "cap-d", fmt="raw", stored_at=T0 + 3)
    assert _ids(store) == ["cap-c", "cap-d"]


def test_store_never_evicts_an_unretrieved_capture(tmp_path: Path) -> None:
    store = _two_capture_store(tmp_path, evict=True)
    put(store, "cap-a", fmt="raw", stored_at=T0)
    put(store, "cap-b", fmt="raw", stored_at=T0 + 1)
    store.read_image("cap-b", 0, "raw")
    put(store, "cap-c", fmt="raw", stored_at=T0 + 2)  # evicts b, the only retrieved one
    assert _ids(store) == ["cap-a", "cap-c"]
    with pytest.raises(StoreFull):
        put(store, "cap-d", fmt="raw", stored_at=T0 + 3)
    assert _ids(store) == ["cap-a", "cap-c"]


def test_store_disk_reserve_counts_as_full(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path / "store", StoreLimits(min_free_bytes=1 << 62))
    with pytest.raises(StoreFull, match="free on disk"):
        store.check_space()
    assert store.info().free_bytes == 0


# -- reading, retrieval marks, conversion -------------------------------------------------------


def test_store_read_image_marks_retrieved_persistently(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    capture = put(store, "scan-1")
    put(store, "scan-2")
    assert not capture.retrieved
    data, frame = store.read_image("scan-1", 0, "jpeg")
    assert frame == capture.frames[0]
    assert hashlib.sha256(data).hexdigest() == frame.sha256
    got = store.get("scan-1")
    assert got is not None and got.retrieved

    reopened = CaptureStore(root, NO_DISK_RESERVE)
    one, two = reopened.get("scan-1"), reopened.get("scan-2")
    assert one is not None and one.retrieved
    assert two is not None and not two.retrieved


def test_store_open_image_serves_the_stored_file_and_marks_retrieved(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    capture = put(store, "scan-1")
    stored, frame = store.open_image("scan-1", 0)
    with stored:
        assert frame == capture.frames[0]
        assert hashlib.sha256(stored.read()).hexdigest() == frame.sha256
    got = store.get("scan-1")
    assert got is not None and got.retrieved
    reopened = CaptureStore(root, NO_DISK_RESERVE).get("scan-1")
    assert reopened is not None and reopened.retrieved
    with pytest.raises(CaptureNotFound, match="no camera 3"):
        store.open_image("scan-1", 3)
    with pytest.raises(CaptureNotFound):
        store.open_image("scan-9", 0)


def test_store_release_matching_deletes_only_the_capture_with_those_checksums(
    store: CaptureStore,
) -> None:
    ours = put(store, "scan-1")
    expected = {f.camera: f.sha256 for f in ours.frames}
    assert store.release_matching("scan-1", {0: "0" * 64}) is None  # not ours: kept
    assert store.get("scan-1") is not None
    # a re-capture under the same code moved ours aside: that one goes, the new one stays
    store.reserve("scan-1", rename_held=True)
    other, images = make_capture("scan-1 again", stored_at=T0 + 5)  # other pixels
    store.commit(other.model_copy(update={"capture_id": "scan-1"}), images)
    assert store.release_matching("scan-1", expected) == "scan-1.r1"
    assert _ids(store) == ["scan-1"]
    assert store.release_matching("scan-1", expected) is None
    assert store.release_matching("scan-1", {}) is None


def test_store_read_image_converts_jpeg_to_png_and_caches(store: CaptureStore) -> None:
    capture = put(store, "scan-1")
    stored_jpeg = (store.root / "captures" / "scan-1" / "cam0.jpeg").read_bytes()
    bytes_before = store.info().bytes
    png, frame = store.read_image("scan-1", 0, "png")
    assert png.startswith(PNG_SIGNATURE)
    assert frame == capture.frames[0]  # metadata still describes the stored jpeg
    cached = store.root / "captures" / "scan-1" / "cam0.png"
    assert cached.read_bytes() == png
    assert store.info().bytes == bytes_before + len(png)
    again, _ = store.read_image("scan-1", 0, "png")
    assert again == png
    jpeg, _ = store.read_image("scan-1", 0, "jpeg")
    assert jpeg == stored_jpeg


def test_store_read_image_unknown_capture_or_camera_is_not_found(store: CaptureStore) -> None:
    put(store, "scan-1")
    with pytest.raises(CaptureNotFound, match="nope"):
        store.read_image("nope", 0, "jpeg")
    with pytest.raises(CaptureNotFound, match="camera 3"):
        store.read_image("scan-1", 3, "jpeg")
    got = store.get("scan-1")
    assert got is not None and not got.retrieved


# -- release ------------------------------------------------------------------------------------


def test_store_release_deletes_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = CaptureStore(root, NO_DISK_RESERVE)
    put(store, "scan-1")
    put(store, "scan-2")
    assert store.release("scan-1") is True
    assert store.release("scan-1") is False
    assert store.release("never") is False
    assert _ids(store) == ["scan-2"]
    assert not (root / "captures" / "scan-1").exists()
    assert list((root / "staging").iterdir()) == []
    assert _ids(CaptureStore(root, NO_DISK_RESERVE)) == ["scan-2"]
    store.reserve("scan-1")  # a released id may be taken again


# -- waiting for a capture in progress ----------------------------------------------------------


def test_store_wait_for_pending_times_out_with_not_found(store: CaptureStore) -> None:
    store.reserve("scan-1")
    with pytest.raises(CaptureNotFound, match="still in progress"):
        store.wait_for("scan-1", timeout=0.05)
    with pytest.raises(DuplicateCapture, match="scan-1"):
        store.reserve("scan-1")  # still being taken


def test_store_wait_for_unknown_id_is_not_found_at_once(store: CaptureStore) -> None:
    with pytest.raises(CaptureNotFound, match="no images"):
        store.wait_for("never", timeout=30)


def test_store_wait_for_held_returns_at_once(store: CaptureStore) -> None:
    capture = put(store, "scan-1")
    assert store.wait_for("scan-1", timeout=0) == capture


def test_store_wait_for_returns_when_another_thread_commits(store: CaptureStore) -> None:
    capture, images = make_capture("scan-1")
    store.reserve("scan-1")
    waiting = threading.Event()
    done = threading.Event()
    found: list[StoredCapture] = []

    def waiter() -> None:
        waiting.set()
        found.append(store.wait_for("scan-1", timeout=30))
        done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert waiting.wait(5)
    store.commit(capture, images)
    assert done.wait(5), "wait_for did not return after the commit"
    thread.join(5)
    assert found == [capture]


def test_store_wait_for_abandoned_capture_is_not_found(store: CaptureStore) -> None:
    store.reserve("scan-1")
    waiting = threading.Event()
    done = threading.Event()
    errors: list[Exception] = []

    def waiter() -> None:
        waiting.set()
        try:
            store.wait_for("scan-1", timeout=30)
        except CaptureNotFound as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=waiter, daemon=True).start()
    assert waiting.wait(5)
    store.abandon("scan-1")
    assert done.wait(5)
    assert len(errors) == 1


# -- info ---------------------------------------------------------------------------------------


def test_store_info_counts_captures_and_bytes(tmp_path: Path) -> None:
    limits = StoreLimits(max_bytes=10_000_000, min_free_bytes=0)
    store = CaptureStore(tmp_path / "store", limits)
    empty = store.info()
    assert (empty.captures, empty.bytes, empty.free_bytes) == (0, 0, 10_000_000)
    put(store, "scan-1", cameras=2)
    put(store, "scan-2")
    info = store.info()
    on_disk = sum(p.stat().st_size for p in (store.root / "captures").rglob("*") if p.is_file())
    assert info.captures == 2
    assert info.bytes == on_disk
    assert info.free_bytes == 10_000_000 - on_disk
    store.release("scan-1")
    assert store.info().captures == 1


def test_store_recapture_reservation_never_leaves_the_id_unknown(tmp_path: Path) -> None:
    # A PEPI client retrieving "7" right after its re-capture must wait for the new capture,
    # not be told that nothing is stored under "7".
    store = CaptureStore(tmp_path / "store", NO_DISK_RESERVE)
    first = put(store, "7", stored_at=T0)
    store.reserve("7", rename_held=True)
    with pytest.raises(DuplicateCapture, match="7"):
        store.reserve("7")
    kept = store.get("7.r1")
    assert kept is not None and kept.frames == first.frames
    with pytest.raises(CaptureNotFound, match="still in progress"):
        store.wait_for("7", timeout=0.01)
