"""Whether the OS says this clock is synchronised (chrony, systemd-timesyncd, ntpd, ptp4l)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

_TIME_ERROR = 5
"""adjtimex() state meaning 'clock not synchronised' (STA_UNSYNC set)."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once: find_library runs ``ldconfig`` as a child process."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        return ctypes.CDLL(path, use_errno=True)
    except OSError:
        return None


def clock_synchronised() -> bool | None:
    """True/False from the kernel's NTP state (adjtimex); None where it cannot be read."""
    libc = _libc()
    if libc is None:
        return None
    try:
        buf = ctypes.create_string_buffer(512)  # larger than struct timex; modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        logger.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return bool(state != _TIME_ERROR)
