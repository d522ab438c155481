"""Whether the OS says this clock is synchronised (chrony, systemd-timesyncd, ntpd, ptp4l)."""

from __future__ import annotations

import ctypes
import logging

from pepi_fleet.node.libc import libc

logger = logging.getLogger(__name__)

_TIME_ERROR = 5
"""adjtimex() state meaning 'clock not synchronised' (STA_UNSYNC set)."""


def clock_synchronised() -> bool | None:
    """True/False from the kernel's NTP state (adjtimex); None where it cannot be read."""
    c = libc()
    if c is None:
        return None
    try:
        buf = ctypes.create_string_buffer(512)  # larger than struct timex; modes = 0: read only
        state = c.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        logger.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return bool(state != _TIME_ERROR)
