"""The camera seam: what the agent needs from any backend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from pepi_fleet.schemas.camera import CameraControls, CameraSettings
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import MAX_FPS, MIN_FPS, CameraInfo

RGBArray = npt.NDArray[np.uint8]
"""Height x width x 3, uint8."""


def check_fps(fps: float) -> float:
    """``fps`` if a camera may run at it, else a CameraError naming the range."""
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise CameraError(
            f"frame rate must be between {MIN_FPS:g} and {MAX_FPS:g} fps, got {fps!r}"
        )
    return fps


@dataclass(frozen=True)
class CapturedFrame:
    """One frame from one camera, before encoding."""

    camera: int
    timestamp: float
    """Wall clock (Unix s) at which the frame's exposure started, on this node."""
    pixels: RGBArray
    model: str
    make: str = "pepi-fleet"
    """EXIF Make: the camera's maker (the simulated backends name the project)."""
    crop: tuple[int, int, int, int] | None = None
    """(x, y, width, height) of the sensor's full-resolution pixel array the frame shows
    (libcamera's ScalerCrop), when the backend knows it; None: the largest centred area of
    the frame's aspect ratio. Sets the focal-plane resolution written to EXIF."""
    in_sync: bool | None = None
    """Taken while the camera was frame-locked (libcamera SyncReady); None: sync not in use."""
    controls: CameraControls | None = None
    """Exposure, gain, white balance and focus the camera applied to this frame, if known."""


class Camera(Protocol):
    """A node's camera(s). Only the agent's capture thread calls ``capture``."""

    def infos(self) -> list[CameraInfo]:
        """One entry per camera, index order."""
        ...

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        """Frames from ``cameras``: the next frame (``at`` None) or the frame nearest ``at``.

        Blocks until the frame exists. Raises CameraError on failure."""
        ...

    def preview_jpeg(self, camera: int, max_width: int = 640) -> bytes:
        """A small JPEG of what the camera sees now (for MJPEG streams). Thread-safe."""
        ...

    def set_resolution(self, width: int, height: int) -> None:
        """Change the capture resolution; CameraError if unsupported."""
        ...

    def set_fps(self, fps: float) -> None:
        """Change the frame rate; CameraError if unsupported."""
        ...

    def close(self) -> None:
        """Release the hardware."""
        ...


@runtime_checkable
class SyncableCamera(Camera, Protocol):
    """Cameras whose libcamera sync role can change while running (the picamera2 backend)."""

    def set_sync_role(self, role: Literal["server", "client"]) -> None:
        """Lead the rig's camera sync, or follow it; CameraError when sync is off."""
        ...


@runtime_checkable
class AdjustableCamera(Camera, Protocol):
    """A camera whose sensor settings can be set and read back (the picamera2 backend)."""

    def apply_settings(self, settings: CameraSettings) -> None:
        """Apply the given fields to every camera; CameraError, nothing changed, if one cannot."""
        ...

    def read_settings(self) -> list[CameraControls]:
        """Per camera, the values applied to its latest frame (for "lock exposure")."""
        ...
