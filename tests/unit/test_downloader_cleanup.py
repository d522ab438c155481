"""A restarted controller removes the half-written files of a killed one, and nothing else."""

from __future__ import annotations

from pathlib import Path

from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.ledger import Ledger


def test_downloader_removes_only_partial_files(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    downloader = Downloader(ledger, tmp_path, lambda node: None, workers=1)
    try:
        folder = tmp_path / "scan-1"
        folder.mkdir()
        kept = [folder / "idcam1_dscan-1_cam0.jpeg", folder / "manifest.json"]
        for path in kept:
            path.write_bytes(b"verified")
        (folder / ".idcam2_dscan-1_cam0.jpeg.1a2b3c4d.part").write_bytes(b"half")
        (folder / ".manifest.json.5e6f7a8b.part").write_bytes(b"{")
        assert downloader.remove_partial_files() == 2
        assert sorted(folder.iterdir()) == sorted(kept)
        assert downloader.remove_partial_files() == 0
    finally:
        downloader.close()
        ledger.close()
