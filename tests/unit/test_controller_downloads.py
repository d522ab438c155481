"""The whole Controller in process (``support.controller_rig``): summaries and downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support.controller_rig import DOWNLOAD_WAIT_S, Rig, no_broker, rig, running_rig

from pepi_fleet.controller.config import ControllerConfig
from pepi_fleet.controller.downloader import ORPHAN_GRACE_S
from pepi_fleet.controller.ledger import image_path
from pepi_fleet.controller.manifest import MANIFEST_FILE
from pepi_fleet.controller.retrieval import retry_delay
from pepi_fleet.controller.service import RETRY_SWEEP_S

__all__ = ["no_broker", "rig"]  # fixtures


def test_controller_summary_says_downloaded_only_once_every_image_is_verified(rig: Rig) -> None:
    cam1, cam2 = rig.fleet.add("cam1"), rig.fleet.add("cam2")
    rig.online("cam1")
    rig.online("cam2")
    rig.send(rig.topics.capture(), "scan-1")
    rig.wait(lambda e: e["type"] == "set_opened")
    results = [cam1.capture("scan-1"), cam2.capture("scan-1")]
    images = {"cam1": cam1.image("scan-1"), "cam2": cam2.image("scan-1")}
    cam2.corrupt.add("scan-1")
    for result in results:
        rig.result(result)

    # Every node answered; cam1's copy is verified, cam2's transfer is corrupt.
    ledger = rig.controller.ledger
    rig.until(
        lambda: (
            ledger.nodes_owing("scan-1") == {"cam2"} and ledger.owed_by("cam2", rig.clock()) == []
        ),
        "cam1's copy verified, cam2's transfer failed and backing off",
    )
    assert not [e for e in rig.settle() if e["type"] == "set_complete"]  # held back

    # The wait for downloads runs out: the summary goes out, saying they are pending.
    rig.clock.advance(DOWNLOAD_WAIT_S + 1)
    pending = rig.summary("scan-1")
    assert pending["downloaded"] is False
    assert pending["files"] == [image_path("scan-1", "cam1", 0, "jpeg")]
    assert rig.copy("scan-1", "cam2") is None
    assert "scan-1" in cam2.holds()

    # cam2 serves its image intact again: the next retry verifies it, the summary follows.
    cam2.corrupt.clear()
    rig.clock.advance(RETRY_SWEEP_S + retry_delay(2))
    done = rig.summary("scan-1")
    assert done["downloaded"] is True and len(done["files"]) == 2
    for result in results:
        copy = rig.copy("scan-1", result.node_id)
        assert copy == images[result.node_id]
        assert hashlib.sha256(copy).hexdigest() == result.frames[0].sha256


def test_controller_summary_waits_for_a_slow_download_only_a_moment(
    tmp_path: Path, no_broker: str
) -> None:
    # Default settings: a fleet's thousand downloads take seconds; the summary of its
    # results must not wait for them.
    wait_s = ControllerConfig.model_fields["download_wait_s"].default
    with running_rig(tmp_path / "data", no_broker) as rig:
        cam1 = rig.fleet.add("cam1")
        rig.online("cam1")
        rig.send(rig.topics.capture(), "slow-1")
        rig.wait(lambda e: e["type"] == "set_opened")
        result = cam1.capture("slow-1")
        with cam1.hold_fetches():  # the node takes its time serving the image
            rig.result(result)
            rig.until(lambda: cam1.fetches == ["slow-1"], "the download under way")
            rig.clock.advance(wait_s)  # the results are in; the download is not
            pending = rig.summary("slow-1")
            assert wait_s <= 2.0 and pending["downloaded"] is False and pending["files"] == []
            assert [(o["node_id"], o["status"]) for o in pending["outcomes"]] == [("cam1", "ok")]
            manifest = rig.controller.config.data_dir / "slow-1" / MANIFEST_FILE
            rig.until(manifest.exists, "the set's manifest written, its image not listed yet")
            assert '"downloaded":false' in manifest.read_text().replace(" ", "")
        done = rig.summary("slow-1")
        assert done["downloaded"] is True and len(done["files"]) == 1


def test_controller_recovers_a_capture_it_never_heard_of(rig: Rig) -> None:
    cam1 = rig.fleet.add("cam1")
    missed = cam1.capture("while-down", age_s=ORPHAN_GRACE_S + 60)
    image = cam1.image("while-down")

    rig.online("cam1")  # asked for everything it holds

    summary = rig.summary("while-down")
    assert summary["downloaded"] is True and len(summary["files"]) == 1
    assert rig.copy("while-down", "cam1") == image
    detail = rig.controller.ledger.get_set("while-down")
    assert detail is not None and [r.result for r in detail.results] == [missed]
    rig.until(lambda: not cam1.holds(), "the capture released on the node")
    assert cam1.released == ["while-down"]
