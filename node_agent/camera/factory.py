"""Builds the configured camera backend."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pepi_fleet.core.frame_grid import frame_period
from pepi_fleet.node.camera.base import Camera
from pepi_fleet.node.camera.folder import FolderCamera
from pepi_fleet.node.camera.pi_sync import SyncRole
from pepi_fleet.node.camera.picamera2_backend import Picamera2Camera
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.frame_clock import phase_for_node
from pepi_fleet.schemas.errors import CameraError

logger = logging.getLogger(__name__)

CameraKind = Literal["synthetic", "folder", "picamera2"]


def make_camera(
    kind: CameraKind,
    *,
    node_id: str,
    resolution: tuple[int, int],
    fps: float,
    count: int = 1,
    frame_lock: bool = False,
    sync_role: SyncRole = "auto",
    phase_s: float | None = None,
    folder: Path | None = None,
) -> Camera:
    """The camera backend ``kind``; CameraError for settings that do not fit it."""
    if kind != "folder" and folder is not None:
        raise CameraError(f"a folder was given but the camera is {kind!r}; use the folder camera")
    if kind == "synthetic":
        return SyntheticCamera(
            node_id,
            resolution=resolution,
            fps=fps,
            count=count,
            frame_lock=frame_lock,
            phase_s=phase_s,
        )
    if kind == "folder":
        if folder is None:
            raise CameraError("the folder camera needs a folder of images; give one")
        if count != 1:
            raise CameraError(f"the folder camera has one camera; {count} were asked for")
        if fps <= 0:
            raise CameraError(f"frame rate must be positive, got {fps!r}")
        if frame_lock:
            phase = 0.0
        elif phase_s is not None:
            phase = phase_s
        else:
            phase = phase_for_node(node_id, frame_period(fps))
        # Replayed images keep their own size: a dataset is rarely at the configured size.
        logger.info("folder camera ignores resolution %dx%d", *resolution)
        return FolderCamera(folder, fps, phase_s=phase)
    if kind == "picamera2":
        if phase_s is not None:
            # A sensor's frame phase is its own, or the sync server's with frame_lock.
            logger.warning("picamera2 camera: phase_s has no effect on a real sensor")
        return Picamera2Camera(resolution, fps, count, frame_lock=frame_lock, sync_role=sync_role)
    raise CameraError(f"unknown camera kind {kind!r}; use synthetic, folder or picamera2")
