"""The project's error tree; foreign exceptions are converted to these at the seams."""

from __future__ import annotations


class PepiError(Exception):
    """Base of every error pepi-fleet raises on purpose."""


class PayloadError(PepiError):
    """A message payload or request that does not match the contract."""


class CameraError(PepiError):
    """The camera could not deliver a frame."""


class StoreError(PepiError):
    """The capture store could not accept or find a capture."""
