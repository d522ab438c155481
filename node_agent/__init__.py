"""The pepi-fleet node agent: one per Pi, MQTT-triggered capture, Thrift retrieval."""

from __future__ import annotations

from pepi_fleet import __version__

__all__ = ["__version__"]
