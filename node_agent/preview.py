"""Small JPEG previews of captured frames (MQTT preview topic, Home Assistant camera)."""

from __future__ import annotations

import io

from PIL import Image

from pepi_fleet.node.camera.base import CapturedFrame

PREVIEW_MAX_SIDE = 320


def thumbnail_jpeg(frame: CapturedFrame, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """A JPEG no larger than ``max_side`` on its long edge."""
    image = Image.fromarray(frame.pixels)
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=75)
    return out.getvalue()
