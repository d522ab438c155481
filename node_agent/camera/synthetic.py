"""The synthetic camera: a streaming test-chart sensor for demos and tests."""

from __future__ import annotations

import colorsys
import hashlib
import io
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pepi_fleet.core.frame_grid import frame_period
from pepi_fleet.node.camera.base import CapturedFrame, check_fps
from pepi_fleet.node.camera.sensors import SENSORS
from pepi_fleet.node.camera.synthetic_exposure import SyntheticExposure, check_synthetic_settings
from pepi_fleet.node.frame_clock import FrameClock, phase_for_node
from pepi_fleet.schemas.camera import CameraControls, CameraSettings, merge_settings
from pepi_fleet.schemas.errors import CameraError
from pepi_fleet.schemas.status import CameraInfo

logger = logging.getLogger(__name__)

MODEL = "synthetic"
MAX_RESOLUTION = SENSORS[MODEL].pixels
"""What the chart claims as its sensor size (the Raspberry Pi HQ camera's)."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class SyntheticCamera:
    """``count`` cameras rendering a test chart; frames start on a FrameClock grid.

    ``frame_lock`` puts every node on the shared grid ``t = k / fps``; otherwise the
    node gets ``phase_s`` or a stable phase derived from ``node_id``. Exposure, gain and
    white balance are automatic (per node and camera, deterministic) until set.
    """

    def __init__(
        self,
        node_id: str,
        resolution: tuple[int, int] = (1920, 1080),
        fps: float = 30.0,
        count: int = 1,
        frame_lock: bool = False,
        phase_s: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if count < 1:
            raise CameraError(f"synthetic camera count must be at least 1, got {count}")
        self._node_id = node_id
        self._count = count
        self._frame_lock = frame_lock
        self._phase_s = phase_s
        self._clock = clock
        self._sleep = sleep
        self._tint = _node_tint(node_id)
        # Guards settings and the background cache: preview_jpeg runs on other threads.
        self._lock = threading.Lock()
        self._backgrounds: dict[tuple[tuple[int, int], int], Image.Image] = {}
        # Room for a capture and two preview sizes per camera (~6 MB each at 1080p).
        self._cache_size = 3 * count + 2
        self._closed = False
        _check_resolution(resolution)
        self._resolution = resolution
        self._frame_clock = self._make_frame_clock(fps)
        self._exposures = [SyntheticExposure(node_id, i) for i in range(count)]
        self._warm(resolution)

    @property
    def frame_clock(self) -> FrameClock:
        """The current frame grid (replaced by ``set_fps``)."""
        with self._lock:
            return self._frame_clock

    def infos(self) -> list[CameraInfo]:
        """One entry per synthetic camera."""
        with self._lock:
            resolution = self._resolution
        controls = self.read_settings()
        return [
            CameraInfo(
                index=i,
                model=MODEL,
                resolution=resolution,
                max_resolution=MAX_RESOLUTION,
                fps=round(1 / self.frame_clock.period_s, 3),
                controls=controls[i],
            )
            for i in range(self._count)
        ]

    def apply_settings(self, settings: CameraSettings) -> None:
        """Fix or free exposure, gain and white balance of every camera (no focus motor)."""
        check_synthetic_settings(settings)
        if settings.resolution is not None:
            self.set_resolution(*settings.resolution)
        with self._lock:
            for exposure in self._exposures:
                exposure.requested = merge_settings(exposure.requested, settings)

    def read_settings(self) -> list[CameraControls]:
        """Per camera, the exposure, gain and white balance its frames are taken with."""
        with self._lock:
            duration_us = round(self._frame_clock.period_s * 1e6)
            return [exposure.controls(duration_us) for exposure in self._exposures]

    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        """Render one frame per requested camera, all with the same frame timestamp.

        Waits (with the injected ``sleep``) until the frame has started, like a sensor.
        """
        self._check_cameras(cameras)
        with self._lock:
            frame_clock = self._frame_clock
            resolution = self._resolution
        now = self._clock()
        start = frame_clock.frame_for_request(now, at)
        if start > now:
            self._sleep(start - now)
        index = frame_clock.frame_index(start)
        controls = self.read_settings()
        return [
            CapturedFrame(
                camera=cam,
                timestamp=start,
                pixels=np.asarray(self._render(resolution, cam, capture_id, start, index)),
                model=MODEL,
                controls=controls[cam],
            )
            for cam in cameras
        ]

    def preview_jpeg(self, camera: int, max_width: int = 640) -> bytes:
        """A small JPEG of the chart as it is now."""
        self._check_cameras([camera])
        if max_width < 1:
            raise CameraError(f"preview width must be at least 1 pixel, got {max_width}")
        with self._lock:
            frame_clock = self._frame_clock
            width, height = self._resolution
        size = (min(width, max_width), max(1, round(height * min(width, max_width) / width)))
        start = frame_clock.latest_frame(self._clock())
        image = self._render(size, camera, "live", start, frame_clock.frame_index(start))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
        return out.getvalue()

    def set_resolution(self, width: int, height: int) -> None:
        """Change the resolution of every camera, up to ``MAX_RESOLUTION``."""
        _check_resolution((width, height))
        self._warm((width, height))
        with self._lock:
            self._resolution = (width, height)

    def set_fps(self, fps: float) -> None:
        """Change the frame rate; the frame grid is rebuilt for the new period."""
        frame_clock = self._make_frame_clock(fps)
        with self._lock:
            self._frame_clock = frame_clock

    def close(self) -> None:
        """Nothing to release; later captures fail."""
        self._closed = True

    def _make_frame_clock(self, fps: float) -> FrameClock:
        period = frame_period(check_fps(fps))
        if self._frame_lock:
            phase = 0.0
        elif self._phase_s is not None:
            phase = self._phase_s
        else:
            phase = phase_for_node(self._node_id, period)
        return FrameClock(period, phase)

    def _check_cameras(self, cameras: list[int]) -> None:
        if self._closed:
            raise CameraError("synthetic camera is closed; restart the node agent")
        if not cameras:
            raise CameraError("no cameras requested; give at least one camera index")
        bad = [c for c in cameras if not 0 <= c < self._count]
        if bad:
            raise CameraError(
                f"camera index {bad[0]} does not exist; this node has cameras 0..{self._count - 1}"
            )

    def _background(self, size: tuple[int, int], camera: int) -> Image.Image:
        key = (size, camera)
        with self._lock:
            cached = self._backgrounds.get(key)
            if cached is None:
                cached = _chart_background(size, camera, self._tint, self._node_id)
                if len(self._backgrounds) >= self._cache_size:
                    del self._backgrounds[next(iter(self._backgrounds))]
                self._backgrounds[key] = cached
            return cached

    def _warm(self, size: tuple[int, int]) -> None:
        # Building a 1080p background takes ~0.1 s: do it now, not in the first capture.
        for camera in range(self._count):
            self._background(size, camera)

    def _render(
        self, size: tuple[int, int], camera: int, capture_id: str, start: float, index: int
    ) -> Image.Image:
        image = self._background(size, camera).copy()
        stamp = datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds")
        text = "\n".join(
            [
                f"node {self._node_id}",
                f"capture {capture_id}",
                f"camera {camera}   frame {index}",
                stamp.replace("+00:00", "Z"),
            ]
        )
        width, height = size
        # Sized to the short side so the text fits portrait frames and small previews too.
        font = _font(max(8, min(height // 14, width // 24)))
        margin = max(2, height // 40)
        draw = ImageDraw.Draw(image)
        spacing = max(1, height // 90)
        box = draw.multiline_textbbox((margin, margin), text, font=font, spacing=spacing)
        pad = max(1, height // 90)
        # A solid panel keeps the text legible over whatever the chart has behind it.
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(16, 16, 16))
        draw.multiline_text(
            (margin, margin), text, font=font, fill=(255, 255, 255), spacing=spacing
        )
        return image


_fonts: dict[int, Font] = {}
_fonts_lock = threading.Lock()


def _font(size: int) -> Font:
    with _fonts_lock:
        font = _fonts.get(size)
        if font is None:
            font = _fonts[size] = ImageFont.load_default(size=size)
        return font


def _check_resolution(resolution: tuple[int, int]) -> None:
    width, height = resolution
    if not (0 < width <= MAX_RESOLUTION[0] and 0 < height <= MAX_RESOLUTION[1]):
        raise CameraError(
            f"resolution {width}x{height} is not supported; "
            f"use up to {MAX_RESOLUTION[0]}x{MAX_RESOLUTION[1]}"
        )


def _node_tint(node_id: str) -> tuple[float, float, float]:
    """A per-node colour, stable across processes, so views are told apart at a glance."""
    hue = hashlib.sha256(node_id.encode("utf-8")).digest()[0] / 256
    return colorsys.hsv_to_rgb(hue, 0.45, 1.0)


def _chart_background(
    size: tuple[int, int], camera: int, tint: tuple[float, float, float], node_id: str
) -> Image.Image:
    """The static part of the chart: gradients, a zone plate, a Siemens star, a grid."""
    width, height = size
    side = min(width, height)
    # Rendered in bands of rows straight into the image: the float32 arithmetic never holds
    # a full frame (a 12 MP frame in float32 is 146 MB; a band is a few MB).
    image = Image.new("RGB", size)
    for top in range(0, height, BAND_ROWS):
        band = _gradient_band(size, camera, tint, top, min(height, top + BAND_ROWS))
        image.paste(Image.fromarray(band), (0, top))

    draw = ImageDraw.Draw(image)
    step = max(8, side // 12)
    for gx in range(0, width, step):
        draw.line((gx, 0, gx, height), fill=(70, 70, 70), width=1)
    for gy in range(0, height, step):
        draw.line((0, gy, width, gy), fill=(70, 70, 70), width=1)

    # Siemens star: resolution and focus at a glance, plus sharp edges for the codec.
    sx, sy, sr = width * 0.25, height * (0.62 + 0.05 * (camera % 2)), side * 0.22
    spokes = 36
    for k in range(spokes):
        a0, a1 = 2 * math.pi * k / spokes, 2 * math.pi * (k + 0.5) / spokes
        points = [
            (sx, sy),
            (sx + sr * math.cos(a0), sy + sr * math.sin(a0)),
            (sx + sr * math.cos(a1), sy + sr * math.sin(a1)),
        ]
        draw.polygon(points, fill=(20, 20, 20))
    draw.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), outline=(240, 240, 240), width=2)

    # Colour patches along the bottom, like a chart's reference swatches.
    swatch = max(4, width // 16)
    top = height - swatch - max(2, height // 40)
    for k in range(12):
        r, g, b = colorsys.hsv_to_rgb(k / 12, 0.8, 0.9)
        left = width // 2 + (k - 6) * swatch
        draw.rectangle(
            (left, top, left + swatch - 2, top + swatch - 2),
            fill=(int(r * 255), int(g * 255), int(b * 255)),
        )
    label = f"pepi-fleet synthetic chart - {node_id} cam {camera}"
    draw.text(
        (width - max(2, height // 40), max(2, height // 40)),
        label,
        font=_font(max(8, height // 40)),
        fill=(240, 240, 240),
        anchor="ra",
    )
    return image


BAND_ROWS = 128
"""Rows of the chart's gradients computed at once (float32: ~6 MB at 4056 pixels wide)."""


def _gradient_band(
    size: tuple[int, int],
    camera: int,
    tint: tuple[float, float, float],
    top: int,
    bottom: int,
) -> np.ndarray:
    """Rows ``top``..``bottom`` of the chart's gradients and zone plate, as uint8 RGB."""
    width, height = size
    # Row and column vectors broadcast to the band only where needed.
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(top, bottom, dtype=np.float32)[:, None]
    u, v = x / max(1, width - 1), y / max(1, height - 1)
    # Smooth colour gradients, turned per camera so each camera's view differs.
    angle = camera * math.pi / 3
    ramp = (u * math.cos(angle) + v * math.sin(angle) + 1.5) / 3.0
    red, green, blue = (np.float32(c) for c in tint)
    rgb = np.empty((bottom - top, width, 3), dtype=np.float32)
    rgb[..., 0] = ramp * red
    rgb[..., 1] = (0.35 + 0.5 * v) * green
    rgb[..., 2] = (1.0 - 0.6 * u) * blue

    # A zone plate (rings getting finer outwards) gives the detail a real scene has.
    side = min(width, height)
    radius = 0.3 * side
    cx, cy = width * (0.72 - 0.08 * (camera % 3)), height * 0.6
    x0, x1 = max(0, int(cx - radius)), min(width, int(cx + radius) + 1)
    y0, y1 = max(top, int(cy - radius)), min(bottom, int(cy + radius) + 1)
    if y0 < y1:
        r2 = ((x[:, x0:x1] - cx) ** 2 + (y[y0 - top : y1 - top] - cy) ** 2) / np.float32(radius**2)
        rings = 0.5 + 0.5 * np.cos(np.float32(math.pi * side / 12) * r2)
        patch = rgb[y0 - top : y1 - top, x0:x1]
        inside = (r2 < 1.0)[..., None]
        rgb[y0 - top : y1 - top, x0:x1] = np.where(
            inside, patch * 0.4 + 0.6 * rings[..., None], patch
        )
    rgb *= 255
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
