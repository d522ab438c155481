"""Capture sets laid out as photogrammetry tools read a rig: flat, Meshroom's, COLMAP's.

Every layout holds only verified images (a manifest ``file``), byte for byte, plus each
set's manifest and ``pepi-export.json`` (which frame is which set, what is missing):

- ``flat``: the images side by side under their PEPI names.
- ``meshroom``: ``rig/<camera index>/<frame>.jpeg`` -- Meshroom's rig convention: the
  same file name in every camera folder is one pose of the rig; indexes run 0..n-1.
- ``colmap``: ``images/<camera>/<frame>.jpeg`` plus ``rig_config.json`` (COLMAP 3.12+):
  one folder per camera, one image per frame with the same name in every folder.

Several sets export together as consecutive frames, in the order given.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from pepi_fleet.controller.manifest import MANIFEST_FILE, Manifest
from pepi_fleet.core.camera_identity import camera_serial
from pepi_fleet.schemas.errors import PayloadError, PepiError
from pepi_fleet.schemas.ids import validate_capture_id

logger = logging.getLogger(__name__)

Layout = Literal["flat", "meshroom", "colmap"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
SUMMARY_FILE = "pepi-export.json"
RIG_CONFIG_FILE = "rig_config.json"
COLMAP_IMAGES = "images"
MESHROOM_RIG = "rig"
MANIFESTS = "manifests"
IMAGE_FORMATS = frozenset({"jpeg", "png"})
"""What the tools read; raw ``.npy`` frames are left out (and named in the notes)."""


class ExportError(PepiError):
    """Capture sets that cannot be exported as asked."""


@dataclass(frozen=True)
class SetSource:
    """One capture set to export: its folder in the data dir and its manifest."""

    folder: Path
    manifest: Manifest


class ExportedCamera(BaseModel):
    """One physical camera of the export and where its images are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serial: str
    """Its EXIF BodySerialNumber."""
    node_id: str
    camera: int
    folder: str
    """Its folder in the export ("" for flat)."""
    images: int


class ExportedFrame(BaseModel):
    """One capture set as one frame (rig pose) of the export."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frame: int
    set_id: str
    name: str | None
    """File name (without suffix) its images share in every camera folder; None for flat."""
    images: int
    missing: list[str]
    """Cameras of the export with no image of this set, and why."""


class ExportSummary(BaseModel):
    """``pepi-export.json``: what the export holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: Layout
    frames: list[ExportedFrame]
    cameras: list[ExportedCamera]
    images: int
    missing: int
    """Camera images the exported sets lack (a node that sent no frames counts in notes only)."""
    notes: list[str]
    """One line per set that lacks images (they are also on stderr / in the API answer)."""


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: existing files to link or copy, and generated documents."""

    name: str
    """A folder name for the export (the zip's top folder)."""
    summary: ExportSummary
    files: list[tuple[str, Path]]
    """(path inside the export, file in the data dir)."""
    documents: list[tuple[str, bytes]]
    """(path inside the export, contents): the summary, each set's manifest, rig config."""

    def members(self) -> list[tuple[str, Path | bytes]]:
        """Everything, in order, for a zip."""
        return [*self.files, *self.documents]


@dataclass
class _Frame:
    source: SetSource
    images: dict[tuple[str, int], Path]
    """(node, camera) -> its verified image."""
    absent: dict[tuple[str, int], str]
    """Cameras of this set without an exportable image, and why."""
    silent: dict[str, str]
    """Expected nodes that delivered no frames in this set, and why."""

    def why_absent(self, key: tuple[str, int]) -> str:
        """Why this set has no image of camera ``key``."""
        return self.absent.get(key) or self.silent.get(key[0]) or "no frame in this set"


def load_sets(data_dir: Path, set_ids: list[str]) -> list[SetSource]:
    """Each set's folder and manifest from the controller's data dir, in the order given."""
    if not set_ids:
        raise ExportError("name at least one capture set to export")
    seen: set[str] = set()
    sources = []
    for set_id in set_ids:
        try:
            validate_capture_id(set_id)
        except PayloadError as exc:
            raise ExportError(str(exc)) from exc
        if set_id in seen:
            raise ExportError(f"capture set {set_id} is named twice: give each set once")
        seen.add(set_id)
        folder = data_dir / set_id
        path = folder / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ExportError(
                f"no capture set {set_id} in {data_dir} (no {path.name}): check the data dir "
                "and the set id (a set's folder appears once one of its images is downloaded)"
            ) from None
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc}") from exc
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as exc:
            raise ExportError(f"{path} is not a pepi-fleet manifest: {exc}") from exc
        sources.append(SetSource(folder, manifest))
    return sources


def plan_export(sets: list[SetSource], layout: Layout) -> ExportPlan:
    """Where each verified image of ``sets`` goes in ``layout``, and the documents beside them.

    Raises ExportError if no set has a single image to export.
    """
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    frames = [_frame_of(source) for source in sets]
    counts = Counter(key for f in frames for key in f.images)
    keys = sorted(counts)
    if not keys:
        ids = ", ".join(s.manifest.capture_id for s in sets)
        raise ExportError(f"capture set(s) {ids} have no downloaded images yet: try again later")
    folders = {key: _camera_folder(layout, key, index) for index, key in enumerate(keys)}
    width = max(4, len(str(len(frames))))
    files: list[tuple[str, Path]] = []
    exported: list[ExportedFrame] = []
    notes: list[str] = []
    missing_images = 0
    for number, frame in enumerate(frames, start=1):
        name = None if layout == "flat" else f"{number:0{width}d}"
        for key in keys:
            image = frame.images.get(key)
            if image is not None:
                file_name = image.name if name is None else name + image.suffix
                files.append((_join(folders[key], file_name), image))
        set_id = frame.source.manifest.capture_id
        # cameras of the export this set lacks, then cameras only this set knew of
        lacking = [k for k in keys if k not in frame.images]
        lacking += sorted(k for k in frame.absent if k not in counts)
        missing = [f"{camera_serial(*k)}: {frame.why_absent(k)}" for k in lacking]
        covered = {node for node, _camera in [*keys, *lacking]}
        missing += [f"{n}: {why}" for n, why in frame.silent.items() if n not in covered]
        missing_images += len(lacking)
        if missing:
            notes.append(f"set {set_id} (frame {number}) lacks {'; '.join(missing)}")
        exported.append(
            ExportedFrame(
                frame=number,
                set_id=set_id,
                name=name,
                images=len(frame.images),
                missing=missing,
            )
        )
    cameras = [
        ExportedCamera(
            serial=camera_serial(*key),
            node_id=key[0],
            camera=key[1],
            folder=folders[key],
            images=counts[key],
        )
        for key in keys
    ]
    summary = ExportSummary(
        layout=layout,
        frames=exported,
        cameras=cameras,
        images=sum(counts.values()),
        missing=missing_images,
        notes=notes,
    )
    documents = [(SUMMARY_FILE, _json(summary))]
    documents += [(f"{MANIFESTS}/{s.manifest.capture_id}.json", _json(s.manifest)) for s in sets]
    if layout == "colmap":
        documents.append((RIG_CONFIG_FILE, colmap_rig_config(cameras)))
    return ExportPlan(_export_name(sets, layout), summary, files, documents)


def colmap_rig_config(cameras: list[ExportedCamera]) -> bytes:
    """COLMAP's ``rig_config.json``: one rig of every camera, the best-covered as reference.

    Only what is known: the image prefix of each camera. The cameras' poses in the rig are
    not, so ``cam_from_rig_*`` are left out; COLMAP's ``rig_configurator`` derives them from
    a first reconstruction (its "unknown rig sensor poses" workflow). Every listed camera has
    images: COLMAP rejects a rig camera without any.
    """
    ref = max(cameras, key=lambda c: c.images)  # the first of the best-covered ones
    folder_prefix = f"{COLMAP_IMAGES}/"
    rig = {
        "cameras": [
            {
                "image_prefix": c.folder.removeprefix(folder_prefix) + "/",
                **({"ref_sensor": True} if c is ref else {}),
            }
            for c in cameras
        ]
    }
    return (json.dumps([rig], indent=2) + "\n").encode()


@dataclass(frozen=True)
class WriteReport:
    """How the files of a directory export were made."""

    linked: int
    copied: int
    documents: int


def write_export(plan: ExportPlan, out: Path, *, copy: bool = False) -> WriteReport:
    """Lay ``plan`` out under ``out`` (new or empty): hard links where possible, else copies.

    Hard links cost no space and keep the bytes the checksums cover; they share those bytes
    with the data dir, so a tool that edits files in place would change the originals: pass
    ``copy`` for such tools.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder: give a new or empty one")
    linked = copied = 0
    link = not copy
    for rel, source in plan.files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(source, target)
                linked += 1
                continue
            except FileNotFoundError as exc:
                raise ExportError(f"{source} is gone from the data dir: {exc}") from exc
            except OSError as exc:  # another file system, or one without hard links
                logger.info("cannot hard-link into %s (%s): copying instead", out, exc)
                link = False
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            raise ExportError(f"cannot copy {source} to {target}: {exc}") from exc
        copied += 1
    for rel, data in plan.documents:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return WriteReport(linked, copied, len(plan.documents))


def _frame_of(source: SetSource) -> _Frame:
    manifest = source.manifest
    images: dict[tuple[str, int], Path] = {}
    absent: dict[tuple[str, int], str] = {}
    for node in manifest.nodes:
        for f in node.frames:
            key = (node.node_id, f.camera)
            if f.file is None:
                absent[key] = "not downloaded (yet)"
            elif f.format not in IMAGE_FORMATS:
                absent[key] = f"{f.format} frame, not an image the tools read"
            elif not (source.folder / f.file).is_file():
                absent[key] = f"{f.file} is listed but not in {source.folder}"
            else:
                images[key] = source.folder / f.file
    answered = {n.node_id: n for n in manifest.nodes}
    silent = {}
    for node_id in sorted({*manifest.expected, *answered}):
        result = answered.get(node_id)
        if result is None:
            silent[node_id] = "never answered"
        elif not result.frames:
            silent[node_id] = f"answered {result.status}" + (
                f": {result.error}" if result.error else ""
            )
    return _Frame(source, images, absent, silent)


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=2) + "\n").encode()


def _camera_folder(layout: Layout, key: tuple[str, int], index: int) -> str:
    if layout == "meshroom":
        return f"{MESHROOM_RIG}/{index}"
    if layout == "colmap":
        return f"{COLMAP_IMAGES}/{camera_serial(*key)}"
    return ""


def _join(folder: str, name: str) -> str:
    return str(PurePosixPath(folder, name)) if folder else name


def _export_name(sets: list[SetSource], layout: Layout) -> str:
    first, last = sets[0].manifest.capture_id, sets[-1].manifest.capture_id
    span = first if len(sets) == 1 else f"{first}-to-{last}"
    return f"{span}-{layout}"
