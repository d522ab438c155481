"""Frame encoding: EXIF contents, timestamp round trips, raw arrays and conversion."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base

from pepi_fleet.node.camera.base import CapturedFrame
from pepi_fleet.node.camera.sensors import SENSORS
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.encode import convert_image, encode_frame, read_exif_timestamp
from pepi_fleet.schemas.errors import PayloadError

TIMESTAMP = 1_767_225_600.123456  # 2026-01-01T00:00:00.123456Z


def _frame(timestamp: float = TIMESTAMP, size: tuple[int, int] = (160, 120)) -> CapturedFrame:
    camera = SyntheticCamera(
        "node-a", resolution=size, clock=lambda: timestamp, sleep=lambda _: None
    )
    pixels = camera.capture([0], "cap-7", timestamp)[0].pixels
    return CapturedFrame(camera=2, timestamp=timestamp, pixels=pixels, model="synthetic")


def _encode(frame: CapturedFrame, fmt: str) -> bytes:
    return encode_frame(frame, fmt, node_id="node-a", capture_id="cap-7").data  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_encode_exif_names_node_capture_camera_and_time(fmt: str) -> None:
    data = _encode(_frame(), fmt)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == fmt.upper()
        exif = image.getexif()
    sub = exif.get_ifd(IFD.Exif)
    assert exif[Base.Make] == "pepi-fleet"
    assert exif[Base.Model] == "synthetic"
    assert exif[Base.DateTime] == "2026:01:01 00:00:00"
    assert exif[Base.ImageDescription] == "pepi-fleet node node-a capture cap-7 camera 2"
    assert sub[Base.DateTimeOriginal] == "2026:01:01 00:00:00"
    assert sub[Base.SubsecTimeOriginal] == "123456"
    assert sub[Base.OffsetTimeOriginal] == "+00:00"
    assert sub[Base.BodySerialNumber] == "node-a-cam2"
    assert sub[Base.ImageUniqueID] == "node-a-cap-7-cam2"
    assert (sub[Base.ExifImageWidth], sub[Base.ExifImageHeight]) == (160, 120)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize(
    "timestamp", [TIMESTAMP, 1_767_225_600.000005, 1_767_225_659.999999, 1_700_000_000.0333333]
)
def test_encode_exif_timestamp_round_trips_to_the_microsecond(fmt: str, timestamp: float) -> None:
    parsed = read_exif_timestamp(_encode(_frame(timestamp), fmt))
    assert round(parsed * 1e6) == round(timestamp * 1e6)


def test_encode_reports_size_format_and_sha256() -> None:
    frame = _frame()
    encoded = encode_frame(frame, "jpeg", node_id="node-a", capture_id="cap-7")
    assert (encoded.format, encoded.width, encoded.height) == ("jpeg", 160, 120)
    assert encoded.sha256 == hashlib.sha256(encoded.data).hexdigest()


def test_encode_raw_is_the_exact_rgb_array_as_npy() -> None:
    frame = _frame()
    encoded = encode_frame(frame, "raw", node_id="node-a", capture_id="cap-7")
    assert (encoded.width, encoded.height) == (160, 120)
    loaded = np.load(io.BytesIO(encoded.data), allow_pickle=False)
    assert loaded.dtype == np.uint8
    assert np.array_equal(loaded, frame.pixels)


def test_encode_png_is_lossless() -> None:
    frame = _frame()
    with Image.open(io.BytesIO(_encode(frame, "png"))) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), frame.pixels)


def test_encode_1080p_jpeg_is_under_1_5_mb() -> None:
    data = _encode(_frame(size=(1920, 1080)), "jpeg")
    assert len(data) < 1_500_000


def test_encode_jpeg_quality_trades_size() -> None:
    frame = _frame(size=(640, 480))
    low = encode_frame(frame, "jpeg", node_id="n", capture_id="c", jpeg_quality=50)
    high = encode_frame(frame, "jpeg", node_id="n", capture_id="c", jpeg_quality=95)
    assert len(low.data) < len(high.data)


def test_encode_convert_jpeg_to_png_keeps_pixels_and_exif() -> None:
    jpeg = _encode(_frame(), "jpeg")
    png = convert_image(jpeg, "jpeg", "png")
    with Image.open(io.BytesIO(png)) as image, Image.open(io.BytesIO(jpeg)) as original:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image), np.asarray(original))
        assert image.getexif().get_ifd(IFD.Exif)[Base.ImageUniqueID] == "node-a-cap-7-cam2"
    assert round(read_exif_timestamp(png) * 1e6) == round(TIMESTAMP * 1e6)


def test_encode_convert_png_source_keeps_the_same_pixels() -> None:
    frame = _frame()
    png = _encode(frame, "png")
    assert convert_image(png, "png", "png") == png
    raw = convert_image(png, "png", "raw")
    assert np.array_equal(np.load(io.BytesIO(raw)), frame.pixels)
    back = convert_image(raw, "raw", "png")
    with Image.open(io.BytesIO(back)) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image), frame.pixels)


def test_encode_convert_png_to_jpeg_keeps_the_timestamp() -> None:
    jpeg = convert_image(_encode(_frame(), "png"), "png", "jpeg", jpeg_quality=80)
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
    assert round(read_exif_timestamp(jpeg) * 1e6) == round(TIMESTAMP * 1e6)


def test_encode_convert_garbage_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not a readable jpeg"):
        convert_image(b"not an image", "jpeg", "png")
    with pytest.raises(PayloadError, match="not a readable raw"):
        convert_image(b"not an array", "raw", "png")


def test_encode_read_exif_timestamp_without_exif_is_a_payload_error() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG")
    with pytest.raises(PayloadError, match="not written by pepi-fleet"):
        read_exif_timestamp(out.getvalue())
    with pytest.raises(PayloadError, match="could not be read"):
        read_exif_timestamp(b"garbage")


def test_encode_exif_make_is_the_cameras() -> None:
    frame = dataclasses.replace(_frame(), model="imx477", make="Raspberry Pi")
    with Image.open(io.BytesIO(_encode(frame, "jpeg"))) as image:
        exif = image.getexif()
    assert (exif[Base.Make], exif[Base.Model]) == ("Raspberry Pi", "imx477")


def _exif_ifd(data: bytes) -> dict[int, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.getexif().get_ifd(IFD.Exif))


def _pi_frame(
    model: str, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None
) -> CapturedFrame:
    return dataclasses.replace(
        _frame(size=size), camera=0, model=model, make="Raspberry Pi", crop=crop
    )


def test_encode_two_cameras_of_one_node_get_distinct_serials() -> None:
    serials = {
        _exif_ifd(_encode(dataclasses.replace(_frame(), camera=cam), "jpeg"))[Base.BodySerialNumber]
        for cam in (0, 1)
    }
    assert serials == {"node-a-cam0", "node-a-cam1"}


@pytest.mark.parametrize(
    ("model", "size", "focal_mm", "sensor_mm", "focal_35mm"),
    [
        # Camera Module 3 at 16:9 shows its whole 16:9 sensor (6.45 x 3.63 mm published)
        ("imx708", (1920, 1080), 4.74, (6.45, 3.63), 28),
        # Camera Module v2 at 4:3 shows its whole 4:3 sensor (3.68 x 2.76 mm published)
        ("imx219", (1640, 1232), 3.04, (3.68, 2.76), 29),
        # the NoIR wide variant has the wide lens
        ("imx708_wide_noir", (2304, 1296), 2.75, (6.45, 3.63), 16),
        # AI camera: HQ-sized sensor, fixed 4.74 mm lens
        ("imx500", (2028, 1520), 4.74, (6.287, 4.712), 26),
    ],
)
def test_encode_known_camera_gets_focal_length_and_consistent_focal_plane(
    model: str,
    size: tuple[int, int],
    focal_mm: float,
    sensor_mm: tuple[float, float],
    focal_35mm: int,
) -> None:
    sub = _exif_ifd(_encode(_pi_frame(model, size), "jpeg"))
    assert sub[Base.FocalPlaneResolutionUnit] == 3  # centimetres
    width_mm = size[0] / (float(sub[Base.FocalPlaneXResolution]) / 10)
    height_mm = size[1] / (float(sub[Base.FocalPlaneYResolution]) / 10)
    assert width_mm == pytest.approx(sensor_mm[0], rel=0.01)
    assert height_mm == pytest.approx(sensor_mm[1], rel=0.01)
    assert float(sub[Base.FocalLength]) == pytest.approx(focal_mm)
    assert sub[Base.FocalLengthIn35mmFilm] == focal_35mm
    assert sub[Base.LensMake] == "Raspberry Pi"
    assert f"{focal_mm:g} mm" in str(sub[Base.LensModel])
    assert float(sub[Base.FNumber]) > 1


def test_encode_focal_plane_gives_the_focal_length_in_pixels() -> None:
    # What COLMAP computes from FocalLength and FocalPlaneXResolution: f / pixel pitch,
    # here a 2x2-binned Camera Module 3 frame (2.8 um effective pixels).
    sub = _exif_ifd(_encode(_pi_frame("imx708", (2304, 1296)), "jpeg"))
    pixels_per_mm = float(sub[Base.FocalPlaneXResolution]) / 10
    focal_px = float(sub[Base.FocalLength]) * pixels_per_mm
    assert focal_px == pytest.approx(4.74 / 0.0028, rel=1e-4)


def test_encode_crop_of_the_sensor_sets_the_focal_plane() -> None:
    # Camera Module v2's 1080p mode reads a central 1920 x 1080 window: 1.12 um pixels.
    frame = _pi_frame("imx219", (1920, 1080), crop=(680, 692, 1920, 1080))
    sub = _exif_ifd(_encode(frame, "jpeg"))
    assert float(sub[Base.FocalPlaneXResolution]) == pytest.approx(10 / 0.00112, rel=1e-4)
    assert sub[Base.FocalLengthIn35mmFilm] == round(3.04 * 43.27 / (0.00112 * 2202.9))


def test_encode_synthetic_camera_claims_the_hq_sensor_without_a_lens() -> None:
    sub = _exif_ifd(_encode(_frame(size=(2028, 1520)), "jpeg"))
    hq = SENSORS["imx477"]
    assert 2028 / (float(sub[Base.FocalPlaneXResolution]) / 10) == pytest.approx(hq.width_mm)
    assert 1520 / (float(sub[Base.FocalPlaneYResolution]) / 10) == pytest.approx(hq.height_mm)
    assert Base.FocalLength not in sub
    assert Base.LensModel not in sub


@pytest.mark.parametrize("model", ["imx477", "imx296"])
def test_encode_interchangeable_lens_camera_gets_no_focal_length(model: str) -> None:
    sub = _exif_ifd(_encode(_pi_frame(model, (1456, 1088)), "jpeg"))
    assert Base.FocalPlaneXResolution in sub
    assert Base.FocalLength not in sub
    assert Base.FocalLengthIn35mmFilm not in sub


def test_encode_unknown_camera_gets_no_optics_but_its_serial() -> None:
    sub = _exif_ifd(_encode(dataclasses.replace(_frame(), model="folder"), "jpeg"))
    assert Base.FocalPlaneXResolution not in sub
    assert Base.FocalLength not in sub
    assert sub[Base.BodySerialNumber] == "node-a-cam2"


def test_encode_optics_survive_conversion_to_png() -> None:
    png = convert_image(_encode(_pi_frame("imx708", (1920, 1080)), "jpeg"), "jpeg", "png")
    sub = _exif_ifd(png)
    assert float(sub[Base.FocalLength]) == pytest.approx(4.74)
    assert sub[Base.BodySerialNumber] == "node-a-cam0"
