"""Decoding of MQTT payloads at the edge: size, nesting, then the pydantic model."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from pepi_fleet.schemas.capture import describe_validation_error
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.nesting import check_nesting

M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], payload: bytes, max_bytes: int) -> M:
    """``payload`` as a ``model``; PayloadError with a one-line reason for anything else.

    The size and the nesting depth are bounded before any parser sees the bytes.
    """
    name = model.__name__
    if len(payload) > max_bytes:
        raise PayloadError(f"{name} is {len(payload)} bytes; the limit is {max_bytes}")
    check_nesting(payload)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(f"{name}: {describe_validation_error(exc)}") from exc
