"""Thrift structs <-> pydantic models, both ways, in one place (Thrift types stay on this side)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import ValidationError

from pepi_fleet.core.idl import load
from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus, Frame

logger = logging.getLogger(__name__)


class HeldCapture(Protocol):
    """What the node keeps about one capture (its store's metadata)."""

    @property
    def capture_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def fired_at(self) -> float: ...
    @property
    def frames(self) -> list[Frame]: ...
    @property
    def retrieved(self) -> bool: ...


def frame_info(frame: Frame) -> Any:
    """A ``FrameInfo`` struct of one stored frame."""
    return load().FrameInfo(
        camera=frame.camera,
        timestamp=frame.timestamp,
        width=frame.width,
        height=frame.height,
        format=frame.format,
        size=frame.bytes,
        sha256=frame.sha256,
        in_sync=frame.in_sync,
        controls=None if frame.controls is None else frame_controls(frame.controls),
    )


def frame_controls(controls: CameraControls) -> Any:
    """A ``FrameControls`` struct of what a camera applied to a frame."""
    red, blue = controls.colour_gains or (None, None)
    return load().FrameControls(
        exposure_time_us=controls.exposure_time_us,
        analogue_gain=controls.analogue_gain,
        red_gain=red,
        blue_gain=blue,
        colour_temperature_k=controls.colour_temperature_k,
        lens_position=controls.lens_position,
        frame_duration_us=controls.frame_duration_us,
        auto_exposure=controls.auto_exposure,
        auto_white_balance=controls.auto_white_balance,
        af_mode=controls.af_mode,
    )


def capture_info(capture: HeldCapture) -> Any:
    """A ``CaptureInfo`` struct of one held capture."""
    return load().CaptureInfo(
        capture_id=capture.capture_id,
        received_at=capture.received_at,
        fired_at=capture.fired_at,
        frames=[frame_info(f) for f in capture.frames],
        retrieved=capture.retrieved,
        source=capture.source,
    )


def frame_of(info: Any) -> Frame:
    """The ``Frame`` a ``FrameInfo`` describes (raises pydantic's ValidationError if unreadable)."""
    return Frame(
        camera=info.camera,
        timestamp=info.timestamp,
        width=info.width,
        height=info.height,
        format=info.format,
        bytes=info.size,
        sha256=info.sha256,
        in_sync=info.in_sync,
        controls=controls_of(info.controls),
    )


def controls_of(info: Any) -> CameraControls | None:
    """The ``CameraControls`` a ``FrameControls`` describes; None if unset or unreadable.

    Unreadable controls are logged and dropped rather than failing the frame: they describe
    the image, and a frame left out would be an image never retrieved.
    """
    if info is None:
        return None
    red, blue = info.red_gain, info.blue_gain
    try:
        return CameraControls(
            exposure_time_us=info.exposure_time_us,
            analogue_gain=info.analogue_gain,
            colour_gains=None if red is None or blue is None else (red, blue),
            colour_temperature_k=info.colour_temperature_k,
            lens_position=info.lens_position,
            frame_duration_us=info.frame_duration_us,
            auto_exposure=info.auto_exposure,
            auto_white_balance=info.auto_white_balance,
            af_mode=info.af_mode,
        )
    except ValidationError as exc:
        logger.warning("frame controls unreadable, left out: %s", exc)
        return None


def result_of(node_id: str, info: Any) -> CaptureResult:
    """The ok ``CaptureResult`` a node published (or should have) for a ``CaptureInfo``."""
    return CaptureResult(
        node_id=node_id,
        capture_id=info.capture_id,
        status=CaptureStatus.OK,
        received_at=info.received_at,
        fired_at=info.fired_at,
        frames=[frame_of(f) for f in info.frames or []],
        source="thrift" if info.source == "thrift" else "mqtt",
    )
