"""The pepi-fleet node agent: one per Pi, MQTT-triggered capture, Thrift retrieval."""

from __future__ import annotations

__version__ = "0.1.0"
