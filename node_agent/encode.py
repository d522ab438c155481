"""Frame encoding (JPEG, PNG, raw .npy) with EXIF naming the capture, the camera and its optics."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.ExifTags import IFD, Base
from PIL.TiffImagePlugin import IFDRational

from pepi_fleet.core.camera_identity import camera_serial
from pepi_fleet.node.camera.base import CapturedFrame, RGBArray
from pepi_fleet.node.camera.sensors import Sensor, frame_optics, sensor_for
from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.capture import ImageFormat
from pepi_fleet.schemas.errors import PayloadError

logger = logging.getLogger(__name__)

PNG_COMPRESS_LEVEL = 3
"""zlib level for PNG: level 6 (Pillow's default) is several times slower for ~5% less size."""

_PIL_FORMATS: dict[ImageFormat, str] = {"jpeg": "JPEG", "png": "PNG"}
FOCAL_PLANE_UNIT_CM = 3
"""EXIF FocalPlaneResolutionUnit: centimetres (2 inches and 3 cm are the standard units)."""
LENS_MAKE = "Raspberry Pi"
RATIONAL_DENOMINATOR = 10_000
ISO_PER_GAIN = 100
USER_COMMENT_ASCII = b"ASCII\0\0\0"
"""EXIF UserComment starts with its character code (8 bytes)."""


@dataclass(frozen=True)
class EncodedImage:
    """One frame as stored and served: the bytes and what a result message says about them."""

    data: bytes
    format: ImageFormat
    width: int
    height: int
    sha256: str
    """Hex SHA-256 of ``data``."""


def encode_frame(
    frame: CapturedFrame,
    fmt: ImageFormat,
    *,
    node_id: str,
    capture_id: str,
    jpeg_quality: int = 90,
) -> EncodedImage:
    """Encode ``frame`` as ``fmt``; JPEG and PNG carry EXIF naming node, capture and time."""
    height, width = frame.pixels.shape[:2]
    if fmt == "raw":
        data = _npy_bytes(frame.pixels)
    else:
        exif = _capture_exif(frame, node_id=node_id, capture_id=capture_id)
        image = Image.fromarray(frame.pixels, "RGB")
        data = _save(image, fmt, exif, jpeg_quality)
    return EncodedImage(
        data=data,
        format=fmt,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def convert_image(data: bytes, src: ImageFormat, dst: ImageFormat, jpeg_quality: int = 90) -> bytes:
    """Re-encode a stored image as ``dst``, keeping its EXIF (raw has none to keep).

    Raises PayloadError if ``data`` is not a readable ``src`` image.
    """
    if src == dst:
        return data
    if src == "raw":
        pixels = _load_npy(data)
        if dst == "raw":  # pragma: no cover - handled by src == dst
            return data
        return _save(Image.fromarray(pixels, "RGB"), dst, None, jpeg_quality)
    image = _open(data, src)
    if dst == "raw":
        return _npy_bytes(np.asarray(image.convert("RGB")))
    exif = image.getexif()
    return _save(image.convert("RGB"), dst, exif, jpeg_quality)


def read_exif_timestamp(data: bytes) -> float:
    """The frame time (Unix s) from a JPEG's or PNG's EXIF, exact to the microsecond.

    Raises PayloadError if the image has no complete pepi-fleet timestamp.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif_ifd = image.getexif().get_ifd(IFD.Exif)
    except (UnidentifiedImageError, OSError) as exc:
        raise PayloadError(f"image could not be read: {exc}") from exc
    original = exif_ifd.get(Base.DateTimeOriginal)
    subsec = exif_ifd.get(Base.SubsecTimeOriginal)
    offset = exif_ifd.get(Base.OffsetTimeOriginal)
    if not (original and subsec and offset):
        raise PayloadError(
            "image EXIF lacks DateTimeOriginal/SubSecTimeOriginal/OffsetTimeOriginal; "
            "it was not written by pepi-fleet"
        )
    try:
        stamp = datetime.strptime(f"{original} {offset}", "%Y:%m:%d %H:%M:%S %z")
    except ValueError as exc:
        raise PayloadError(f"image EXIF time {original!r} {offset!r} is malformed") from exc
    # SubSecTime is a decimal fraction: "5" means .5 s, so pad to microseconds.
    digits = str(subsec).strip()
    if not digits.isdigit():
        raise PayloadError(f"image EXIF SubSecTimeOriginal {digits!r} is not digits")
    micros = int(digits[:6].ljust(6, "0"))
    return stamp.replace(microsecond=micros).timestamp()


def _capture_exif(frame: CapturedFrame, *, node_id: str, capture_id: str) -> Image.Exif:
    stamp = datetime.fromtimestamp(frame.timestamp, UTC)
    when = stamp.strftime("%Y:%m:%d %H:%M:%S")
    exif = Image.Exif()
    exif[Base.Make] = frame.make
    exif[Base.Model] = frame.model
    exif[Base.DateTime] = when
    exif[Base.ImageDescription] = (
        f"pepi-fleet node {node_id} capture {capture_id} camera {frame.camera}"
    )
    exif_ifd = exif.get_ifd(IFD.Exif)
    exif_ifd[Base.DateTimeOriginal] = when
    exif_ifd[Base.SubsecTimeOriginal] = f"{stamp.microsecond:06d}"
    exif_ifd[Base.OffsetTimeOriginal] = "+00:00"
    height, width = frame.pixels.shape[:2]
    exif_ifd[Base.ExifImageWidth] = width  # PixelXDimension: what focal-plane figures refer to
    exif_ifd[Base.ExifImageHeight] = height
    # One serial per physical camera: Meshroom groups intrinsics by make/model/serial.
    exif_ifd[Base.BodySerialNumber] = camera_serial(node_id, frame.camera)
    exif_ifd[Base.ImageUniqueID] = f"{node_id}-{capture_id}-cam{frame.camera}"
    sensor = sensor_for(frame.model)
    if sensor is not None:
        _add_optics(exif_ifd, frame, sensor)
    if frame.controls is not None:
        _add_exposure(exif_ifd, frame.controls)
    if frame.in_sync is not None or frame.controls is not None:
        exif_ifd[Base.UserComment] = USER_COMMENT_ASCII + _comment(frame).encode("ascii")
    return exif


def _add_exposure(exif_ifd: dict[int, Any], controls: CameraControls) -> None:
    """What the camera applied: exposure time, gain as ISO, auto or manual modes."""
    if controls.exposure_time_us is not None and controls.exposure_time_us > 0:
        exif_ifd[Base.ExposureTime] = IFDRational(Fraction(controls.exposure_time_us, 1_000_000))
    if controls.analogue_gain is not None:
        # ISO 100 at unity gain: Raspberry Pi's convention (rpicam-apps' EXIF does the same)
        exif_ifd[Base.ISOSpeedRatings] = max(1, round(controls.analogue_gain * ISO_PER_GAIN))
    if controls.auto_exposure is not None:
        exif_ifd[Base.ExposureMode] = 0 if controls.auto_exposure else 1
    if controls.auto_white_balance is not None:
        exif_ifd[Base.WhiteBalance] = 0 if controls.auto_white_balance else 1


def _comment(frame: CapturedFrame) -> str:
    """UserComment: frame sync and every applied control, for tools that read the file only."""
    parts = ["pepi-fleet"]
    if frame.in_sync is not None:
        parts.append(f"in_sync={'yes' if frame.in_sync else 'no'}")
    if frame.controls is not None:
        parts.append("controls=" + frame.controls.model_dump_json(exclude_none=True))
    return " ".join(parts)


def _add_optics(exif_ifd: dict[int, Any], frame: CapturedFrame, sensor: Sensor) -> None:
    """Intrinsics priors: focal-plane resolution always, lens data where the lens is fixed."""
    height, width = frame.pixels.shape[:2]
    optics = frame_optics(sensor, width, height, frame.crop)
    x_per_mm, y_per_mm = optics.pixels_per_mm
    exif_ifd[Base.FocalPlaneXResolution] = _rational(x_per_mm * 10)
    exif_ifd[Base.FocalPlaneYResolution] = _rational(y_per_mm * 10)
    exif_ifd[Base.FocalPlaneResolutionUnit] = FOCAL_PLANE_UNIT_CM
    if sensor.lens is None:
        return
    focal, f_number = sensor.lens.focal_length_mm, sensor.lens.f_number
    exif_ifd[Base.FocalLength] = _rational(focal)
    exif_ifd[Base.FNumber] = _rational(f_number)
    exif_ifd[Base.LensSpecification] = tuple(
        _rational(v) for v in (focal, focal, f_number, f_number)
    )
    exif_ifd[Base.LensMake] = LENS_MAKE
    exif_ifd[Base.LensModel] = f"{sensor.product} {focal:g} mm f/{f_number:g}"
    if optics.focal_length_35mm is not None:
        exif_ifd[Base.FocalLengthIn35mmFilm] = optics.focal_length_35mm


def _rational(value: float) -> IFDRational:
    """An EXIF RATIONAL (Pillow writes a bare float as DOUBLE, which EXIF readers may skip)."""
    return IFDRational(Fraction(value).limit_denominator(RATIONAL_DENOMINATOR))


def _save(image: Image.Image, fmt: ImageFormat, exif: Image.Exif | None, quality: int) -> bytes:
    out = io.BytesIO()
    options: dict[str, object] = {}
    if exif is not None:
        options["exif"] = exif
    if fmt == "jpeg":
        options["quality"] = quality
    elif fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    image.save(out, format=_PIL_FORMATS[fmt], **options)
    return out.getvalue()


def _open(data: bytes, fmt: ImageFormat) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise PayloadError(f"stored image is not a readable {fmt} file: {exc}") from exc
    return image


def _npy_bytes(pixels: RGBArray) -> bytes:
    out = io.BytesIO()
    np.save(out, pixels, allow_pickle=False)
    return out.getvalue()


def _load_npy(data: bytes) -> RGBArray:
    try:
        pixels = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise PayloadError(f"stored image is not a readable raw .npy array: {exc}") from exc
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise PayloadError(
            f"stored raw image is {pixels.dtype} {pixels.shape}, not height x width x 3 uint8"
        )
    result: RGBArray = pixels
    return result
