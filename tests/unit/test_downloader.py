"""The Downloader in process against fake nodes: verified copies first, releases after, never
the wrong capture; renamed captures followed, corrupt transfers retried, failures logged."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.clock import ManualClock
from support.fake_node_client import FakeFleet

from pepi_fleet.controller.downloader import ORPHAN_GRACE_S, RECONCILE_EVERY_S, Downloader
from pepi_fleet.controller.ledger import ImageState, Ledger, image_path
from pepi_fleet.controller.manifest import MANIFEST_FILE, Manifest
from pepi_fleet.controller.retrieval import BATCH_IMAGES, retry_delay
from pepi_fleet.schemas import CaptureResult

HOLD_S = 30.0


@dataclass
class Rig:
    clock: ManualClock
    fleet: FakeFleet
    ledger: Ledger
    downloader: Downloader
    data_dir: Path

    def record(self, set_id: str, *results: CaptureResult) -> None:
        """What the controller does on a trigger and its results."""
        self.ledger.record_set(set_id, self.clock(), [r.node_id for r in results])
        for result in results:
            self.ledger.record_result(set_id, result)

    def copy(self, set_id: str, node_id: str, camera: int = 0) -> bytes | None:
        """The controller's copy of one image, if it wrote one."""
        path = self.data_dir / image_path(set_id, node_id, camera, "jpeg")
        return path.read_bytes() if path.exists() else None

    def state(self, set_id: str, node_id: str) -> ImageState:
        detail = self.ledger.get_set(set_id)
        assert detail is not None
        [image] = [i for i in detail.images if i.node_id == node_id]
        return image.state


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = ManualClock()
    fleet = FakeFleet(clock)
    data_dir = tmp_path / "data"
    ledger = Ledger(data_dir, clock, thrift_hold_s=HOLD_S)
    downloader = Downloader(
        ledger, data_dir, fleet.endpoint_of, fleet.client, workers=2, clock=clock
    )
    yield Rig(clock, fleet, ledger, downloader, data_dir)
    downloader.close()
    ledger.close()


def no_partial_files(data_dir: Path) -> bool:
    return not list(data_dir.glob("*/.*.part"))


# -- summary gating -----------------------------------------------------------------------------


def test_downloader_set_is_downloaded_only_once_every_image_is_verified(rig: Rig) -> None:
    cam1, cam2 = rig.fleet.add("cam1"), rig.fleet.add("cam2")
    results = [cam1.capture("scan-1"), cam2.capture("scan-1")]
    images = {"cam1": cam1.image("scan-1"), "cam2": cam2.image("scan-1")}
    rig.record("scan-1", *results)
    cam2.corrupt.add("scan-1")

    for node in ("cam1", "cam2"):
        rig.downloader.download_owed(node)
    assert rig.copy("scan-1", "cam1") == images["cam1"]
    assert rig.copy("scan-1", "cam2") is None
    assert not rig.ledger.all_downloaded("scan-1")
    assert rig.ledger.nodes_owing("scan-1") == {"cam2"}
    manifest = read_manifest(rig.data_dir, "scan-1")
    assert not manifest.downloaded
    assert manifest.files == [Path(image_path("scan-1", "cam1", 0, "jpeg")).name]

    cam2.corrupt.clear()
    rig.clock.advance(retry_delay(1))
    rig.downloader.download_owed("cam2")
    assert rig.ledger.all_downloaded("scan-1")
    manifest = read_manifest(rig.data_dir, "scan-1")
    assert manifest.downloaded and len(manifest.files) == 2
    for result in results:
        copy = rig.copy("scan-1", result.node_id)
        assert copy == images[result.node_id]
        assert hashlib.sha256(copy).hexdigest() == result.frames[0].sha256


def read_manifest(data_dir: Path, set_id: str) -> Manifest:
    return Manifest.model_validate_json((data_dir / set_id / MANIFEST_FILE).read_bytes())


# -- reconciliation -----------------------------------------------------------------------------


def test_downloader_reconcile_records_and_downloads_a_capture_the_ledger_never_heard_of(
    rig: Rig,
) -> None:
    cam1 = rig.fleet.add("cam1")
    missed = cam1.capture("while-down", age_s=ORPHAN_GRACE_S + 60)
    image = cam1.image("while-down")

    rig.downloader.download_owed("cam1", force=True)

    assert rig.downloader.recovered.get_nowait() == "while-down"
    assert rig.copy("while-down", "cam1") == image
    assert rig.ledger.all_downloaded("while-down")
    detail = rig.ledger.get_set("while-down")
    assert detail is not None and [r.result for r in detail.results] == [missed]
    assert "while-down" not in cam1.holds()  # released only after the verified copy
    assert cam1.released == ["while-down"]


def test_downloader_reconcile_leaves_a_fresh_capture_whose_result_may_be_on_the_way(
    rig: Rig,
) -> None:
    cam1 = rig.fleet.add("cam1")
    cam1.capture("just-now")

    rig.downloader.download_owed("cam1", force=True)

    assert rig.ledger.get_set("just-now") is None
    assert rig.downloader.recovered.empty()
    assert "just-now" in cam1.holds() and cam1.released == []

    rig.clock.advance(max(ORPHAN_GRACE_S, RECONCILE_EVERY_S) + 1)  # its result never came
    rig.downloader.download_owed("cam1")
    assert rig.downloader.recovered.get_nowait() == "just-now"
    assert rig.ledger.all_downloaded("just-now")


def test_downloader_reconcile_files_a_renamed_capture_under_its_set_not_a_new_one(
    rig: Rig,
) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("7", cam1.capture("7", age_s=ORPHAN_GRACE_S + 60))
    ours = cam1.image("7")
    _, theirs = cam1.recapture("7")  # a PEPI client re-used the code; we never saw its result
    their_image = cam1.image("7")
    rig.clock.advance(ORPHAN_GRACE_S + 1)

    rig.downloader.download_owed("cam1", force=True)

    assert rig.copy("7", "cam1") == ours
    # Only the PEPI client's capture is new to the ledger: a set of its own.
    assert rig.downloader.recovered.get_nowait() == "7-2"
    assert rig.downloader.recovered.empty()
    detail = rig.ledger.get_set("7-2")
    assert detail is not None and [r.result for r in detail.results] == [theirs]
    assert rig.copy("7-2", "cam1") == their_image
    assert rig.ledger.get_set("7.r1") is None
    assert sorted(cam1.released) == ["7", "7.r1"] and cam1.holds() == {}


# -- renamed captures ---------------------------------------------------------------------------


def test_downloader_fetch_follows_a_capture_renamed_aside(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("7", cam1.capture("7"))
    ours = cam1.image("7")
    aside, theirs = cam1.recapture("7")
    assert aside == "7.r1"

    rig.downloader.download_owed("cam1")

    assert rig.copy("7", "cam1") == ours  # not the PEPI client's new capture
    detail = rig.ledger.get_set("7")
    assert detail is not None and detail.results[0].node_capture_id == "7.r1"
    assert cam1.released == ["7.r1"]
    assert cam1.holds() == {"7": theirs}


def test_downloader_release_follows_a_capture_renamed_after_download(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("7", cam1.capture("7", source="thrift"))  # held for the PEPI client a while
    ours = cam1.image("7")
    rig.downloader.download_owed("cam1")
    assert rig.copy("7", "cam1") == ours
    assert cam1.released == []

    _, theirs = cam1.recapture("7")
    rig.clock.advance(HOLD_S + 1)
    rig.downloader.download_owed("cam1")

    assert cam1.released == ["7.r1"]
    assert cam1.holds() == {"7": theirs}


def test_downloader_never_releases_another_capture_under_the_same_id(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("7", cam1.capture("7", source="thrift"))
    rig.downloader.download_owed("cam1")
    cam1.drop("7")  # the node's retention removed ours...
    theirs = cam1.capture("7", source="thrift")  # ...and a PEPI client took "7" again

    rig.clock.advance(HOLD_S + 1)
    rig.downloader.download_owed("cam1")

    assert cam1.released == []
    assert cam1.holds() == {"7": theirs}
    detail = rig.ledger.get_set("7")
    assert detail is not None and detail.results[0].released_at is not None  # not asked again


# -- corrupt transfers and outages --------------------------------------------------------------


def test_downloader_corrupt_transfer_is_retried_never_released_nor_verified(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("scan-1", cam1.capture("scan-1"))
    image = cam1.image("scan-1")
    cam1.corrupt.add("scan-1")

    rig.downloader.download_owed("cam1")
    assert rig.state("scan-1", "cam1") is ImageState.FAILED
    assert rig.copy("scan-1", "cam1") is None and no_partial_files(rig.data_dir)
    assert not rig.ledger.all_downloaded("scan-1")
    assert "scan-1" in cam1.holds() and cam1.released == []
    tries = len(cam1.fetches)

    rig.downloader.download_owed("cam1")  # backing off: not tried again yet
    assert len(cam1.fetches) == tries

    rig.clock.advance(retry_delay(1))
    rig.downloader.download_owed("cam1")
    assert len(cam1.fetches) > tries  # retried
    assert rig.state("scan-1", "cam1") is ImageState.FAILED
    assert rig.copy("scan-1", "cam1") is None
    assert "scan-1" in cam1.holds() and cam1.released == []

    cam1.corrupt.clear()
    rig.clock.advance(retry_delay(2))
    rig.downloader.download_owed("cam1")
    assert rig.state("scan-1", "cam1") is ImageState.DONE
    assert rig.copy("scan-1", "cam1") == image
    assert cam1.released == ["scan-1"]


def test_downloader_stream_broken_off_midway_leaves_no_file_and_is_retried(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("scan-1", cam1.capture("scan-1"))
    rig.record("scan-2", cam1.capture("scan-2"))
    images = {cid: cam1.image(cid) for cid in ("scan-1", "scan-2")}
    cam1.short.add("scan-1")

    rig.downloader.download_owed("cam1")
    # the connection broke: the rest of the pass backs off with it, nothing half-written stays
    assert rig.state("scan-1", "cam1") is ImageState.FAILED
    assert rig.state("scan-2", "cam1") is ImageState.FAILED
    assert rig.copy("scan-1", "cam1") is None and no_partial_files(rig.data_dir)
    assert cam1.released == []

    cam1.short.clear()
    rig.clock.advance(retry_delay(1))
    rig.downloader.download_owed("cam1")
    assert rig.copy("scan-1", "cam1") == images["scan-1"]
    assert rig.copy("scan-2", "cam1") == images["scan-2"]
    assert rig.ledger.all_downloaded("scan-1") and rig.ledger.all_downloaded("scan-2")


def test_downloader_pass_writes_many_images_in_batches(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    for k in range(BATCH_IMAGES + 3):  # more than one batch in one pass
        rig.record(f"scan-{k}", cam1.capture(f"scan-{k}"))
    images = {cid: cam1.image(cid) for cid in cam1.holds()}
    cam1.corrupt.add("scan-5")

    rig.downloader.download_owed("cam1")
    for k in range(BATCH_IMAGES + 3):
        if k == 5:
            assert rig.state("scan-5", "cam1") is ImageState.FAILED
            assert rig.copy("scan-5", "cam1") is None
        else:
            assert rig.state(f"scan-{k}", "cam1") is ImageState.DONE
            assert rig.copy(f"scan-{k}", "cam1") == images[f"scan-{k}"]
    assert no_partial_files(rig.data_dir)


def test_downloader_unreachable_node_keeps_its_images_until_it_answers(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("scan-1", cam1.capture("scan-1"))
    image = cam1.image("scan-1")
    cam1.reachable = False

    rig.downloader.download_owed("cam1", force=True)
    assert rig.state("scan-1", "cam1") is ImageState.FAILED
    assert rig.copy("scan-1", "cam1") is None

    cam1.reachable = True
    rig.downloader.download_owed("cam1", force=True)  # it came back online
    assert rig.copy("scan-1", "cam1") == image
    assert cam1.released == ["scan-1"]


def test_downloader_offline_node_is_not_asked_but_copies_on_disk_count(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("scan-1", cam1.capture("scan-1"))
    image = cam1.image("scan-1")
    copy = rig.data_dir / image_path("scan-1", "cam1", 0, "jpeg")
    copy.parent.mkdir(parents=True)
    copy.write_bytes(image)  # a pass killed after writing, before marking
    rig.fleet.offline.add("cam1")

    rig.downloader.download_owed("cam1")

    assert cam1.fetches == [] and cam1.released == []
    assert rig.ledger.all_downloaded("scan-1")
    assert (rig.data_dir / "scan-1" / MANIFEST_FILE).exists()


# -- failures are logged ------------------------------------------------------------------------


def test_downloader_failed_pass_is_logged_with_node_and_capture(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    cam1 = rig.fleet.add("cam1")
    rig.record("scan-1", cam1.capture("scan-1"))
    (rig.data_dir / "scan-1" / MANIFEST_FILE).mkdir(parents=True)  # the manifest cannot be written

    with caplog.at_level(logging.ERROR, logger="pepi_fleet.controller.downloader"):
        rig.downloader.submit("cam1")
        rig.downloader.close()  # waits for the pass and its done-callback

    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "cam1" in record.getMessage() and "scan-1" in record.getMessage()
    assert record.exc_info is not None
    assert "scan-1" in cam1.holds() and cam1.released == []  # no release without a manifest


# -- a big set: manifests in batches ------------------------------------------------------------


def test_downloader_big_set_manifest_written_in_batches_and_releases_follow_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pepi_fleet.controller import downloader as downloader_module

    writes: list[int] = []
    real_write = downloader_module.write_manifest

    def counting_write(*args: object, **kwargs: object) -> Path:
        writes.append(len(args))
        return real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(downloader_module, "write_manifest", counting_write)
    nodes = [rig.fleet.add(f"cam{i:02d}") for i in range(30)]
    rig.record("scan-1", *(node.capture("scan-1") for node in nodes))

    for node in nodes:  # thirty passes within moments, as when a whole fleet answers
        rig.downloader.download_owed(node.node_id)

    assert rig.ledger.all_downloaded("scan-1")
    assert len(writes) <= 10  # the first pass, the last (set complete), a few between
    manifest = read_manifest(rig.data_dir, "scan-1")
    assert manifest.downloaded and len(manifest.files) == 30
    # A node is released only once a written manifest listed its image: the passes between
    # left theirs for later; the next pass of each node releases it.
    released = [n for n in nodes if n.released]
    assert len(released) < 30
    for node in nodes:
        rig.downloader.download_owed(node.node_id)
    assert all(n.released == ["scan-1"] for n in nodes)
    assert len(writes) <= 10
