"""Capture sets written into a data dir the way the controller writes them, without a fleet.

Images are real: the synthetic camera's chart encoded by the node's own encoder (so they
carry the node's EXIF), named by the ledger's rule, listed in a ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pepi_fleet.controller.ledger import image_path
from pepi_fleet.controller.manifest import MANIFEST_FILE, Manifest, ManifestFrame, ManifestNode
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.encode import encode_frame
from pepi_fleet.schemas import CaptureStatus

BASE_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def write_capture_set(
    data_dir: Path,
    set_id: str,
    cameras: dict[str, list[int]],
    *,
    frame: int = 0,
    size: tuple[int, int] = (320, 240),
    model: str = "imx708",
    not_downloaded: frozenset[tuple[str, int]] = frozenset(),
    silent: tuple[str, ...] = (),
) -> Manifest:
    """One set: every camera of ``cameras`` (node -> indexes) fired, images on disk except
    ``not_downloaded``; ``silent`` nodes were expected but never answered."""
    when = BASE_TIME + frame
    nodes = []
    for node_id, indexes in sorted(cameras.items()):
        camera = SyntheticCamera(
            node_id,
            resolution=size,
            count=max(indexes) + 1,
            clock=lambda: when,
            sleep=lambda _s: None,
        )
        frames = []
        for captured in camera.capture(indexes, set_id, when):
            shot = dataclasses.replace(captured, model=model, make="Raspberry Pi")
            encoded = encode_frame(shot, "jpeg", node_id=node_id, capture_id=set_id)
            rel = image_path(set_id, node_id, shot.camera, "jpeg")
            downloaded = (node_id, shot.camera) not in not_downloaded
            if downloaded:
                (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (data_dir / rel).write_bytes(encoded.data)
            frames.append(
                ManifestFrame(
                    camera=shot.camera,
                    timestamp=shot.timestamp,
                    width=encoded.width,
                    height=encoded.height,
                    format="jpeg",
                    bytes=len(encoded.data),
                    sha256=encoded.sha256,
                    file=Path(rel).name if downloaded else None,
                )
            )
        nodes.append(
            ManifestNode(
                node_id=node_id,
                node_capture_id=set_id,
                status=CaptureStatus.OK,
                received_at=when - 0.5,
                fired_at=when,
                error=None,
                frames=frames,
            )
        )
    files = sorted(f.file for n in nodes for f in n.frames if f.file)
    manifest = Manifest(
        capture_id=set_id,
        triggered_at=when - 0.5,
        at=None,
        completed_at=when + 1,
        expected=sorted([*cameras, *silent]),
        nodes=nodes,
        cameras=sorted({f.camera for n in nodes for f in n.frames}),
        files=files,
        spread_s=0.0,
        fired_spread_s=0.0,
        downloaded=not not_downloaded,
        complete=not (not_downloaded or silent),
        missing=list(silent),
        written_at=when + 2,
    )
    folder = data_dir / set_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest
