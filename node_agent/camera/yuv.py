"""YUV420 frames as picamera2 hands them out, to RGB images (for the preview stream)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from pepi_fleet.schemas.errors import CameraError


def yuv420_to_rgb(array: npt.NDArray[np.uint8], width: int, height: int) -> Image.Image:
    """An RGB image from picamera2's YUV420 array of a ``width`` x ``height`` stream.

    picamera2 returns the planar buffer as ``height * 3 // 2`` rows of ``stride`` bytes:
    ``height`` rows of Y, then the U and V planes of ``height / 2`` rows of ``stride / 2``
    bytes each, packed two chroma rows to an array row. When ``height / 2`` is odd (the
    Global Shutter camera's 640x478 preview) a chroma plane ends half-way along an array
    row, so the planes are cut from the flat buffer by byte offset, never by array row.
    """
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise CameraError(f"YUV420 needs an even size of at least 2x2, got {width}x{height}")
    stride = int(array.shape[1]) if array.ndim == 2 else width
    if stride < width or stride % 2:
        raise CameraError(f"YUV420 row stride {stride} does not fit a {width} pixel wide stream")
    flat = np.ascontiguousarray(array).reshape(-1)
    chroma_rows, chroma_stride = height // 2, stride // 2
    y_size, chroma_size = height * stride, chroma_rows * chroma_stride
    if flat.size < y_size + 2 * chroma_size:
        raise CameraError(
            f"YUV420 buffer of {flat.size} bytes is too small for {width}x{height} "
            f"at stride {stride}"
        )
    y = flat[:y_size].reshape(height, stride)[:, :width]
    u, v = (
        flat[offset : offset + chroma_size].reshape(chroma_rows, chroma_stride)[:, : width // 2]
        for offset in (y_size, y_size + chroma_size)
    )
    chroma = [
        Image.fromarray(np.ascontiguousarray(plane), "L").resize((width, height))
        for plane in (u, v)
    ]
    luma = Image.fromarray(np.ascontiguousarray(y), "L")
    return Image.merge("YCbCr", (luma, *chroma)).convert("RGB")
