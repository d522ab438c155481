"""Stopping the bench's helper processes: SIGTERM, then SIGKILL if they linger.

The same stop the embedded broker uses (``pepi_fleet.broker.runner.terminate``).
"""

from __future__ import annotations

from pepi_fleet.broker.runner import terminate

__all__ = ["terminate"]
