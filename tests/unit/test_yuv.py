"""YUV420 to RGB for the preview stream, for every lores size incl. the Global Shutter's."""

from __future__ import annotations

import numpy as np
import pytest

from pepi_fleet.node.camera.pi_stream import lores_size
from pepi_fleet.node.camera.yuv import yuv420_to_rgb
from pepi_fleet.schemas.errors import CameraError


def planar(width: int, height: int, stride: int, y: int, u: int, v: int) -> np.ndarray:
    """A YUV420 buffer laid out as picamera2 returns it: (height * 3 / 2, stride)."""
    luma = np.full((height, stride), y, dtype=np.uint8)
    luma[:, width:] = 7  # row padding must be ignored
    chroma = height // 2 * (stride // 2)
    flat = np.concatenate(
        [luma.reshape(-1), np.full(chroma, u, np.uint8), np.full(chroma, v, np.uint8)]
    )
    return flat.reshape(height * 3 // 2, stride)


@pytest.mark.parametrize(
    ("main", "stride"),
    [
        pytest.param((1456, 1088), 640, id="Global Shutter 1456x1088 -> 640x478 (odd h/2)"),
        pytest.param((4056, 3040), 640, id="HQ 4056x3040 -> 640x480"),
        pytest.param((4608, 2592), 640, id="Camera Module 3 4608x2592 -> 640x360"),
        pytest.param((1456, 1088), 704, id="GS with stride padding"),
        pytest.param((2028, 1080), 640, id="HQ 2028x1080 -> 640x340 (odd h/2)"),
    ],
)
def test_yuv420_to_rgb_converts_every_lores_size(main: tuple[int, int], stride: int) -> None:
    width, height = lores_size(*main)
    # a saturated red in BT.601 full range: Y 76, Cb 85, Cr 255
    image = yuv420_to_rgb(planar(width, height, stride, 76, 85, 255), width, height)
    assert image.size == (width, height)
    red, green, blue = image.getpixel((width // 2, height - 1))
    assert red > 240 and green < 15 and blue < 15, (red, green, blue)


def test_lores_size_of_the_global_shutter_camera_has_an_odd_chroma_height() -> None:
    assert lores_size(1456, 1088) == (640, 478)
    assert (478 // 2) % 2 == 1


def test_lores_size_never_exceeds_a_small_main_stream() -> None:
    assert lores_size(320, 240) == (320, 240)
    width, height = lores_size(642, 2)
    assert width <= 642 and height <= 2 and width % 2 == 0 and height % 2 == 0


def test_yuv420_to_rgb_planes_are_cut_by_byte_offset() -> None:
    # U and V differ: reading V where U is (the old row-based cut) would swap the colour.
    width, height = 640, 478
    image = yuv420_to_rgb(planar(width, height, width, 128, 90, 200), width, height)
    red, _green, blue = image.getpixel((10, 10))
    assert red > blue


def test_yuv420_to_rgb_rejects_a_short_buffer_and_odd_sizes() -> None:
    with pytest.raises(CameraError, match="too small"):
        yuv420_to_rgb(np.zeros((100, 640), np.uint8), 640, 478)
    with pytest.raises(CameraError, match="even"):
        yuv420_to_rgb(np.zeros((720, 640), np.uint8), 640, 479)
