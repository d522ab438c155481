"""Whether the OS says this clock is synchronised (chrony, systemd-timesyncd, ntpd, ptp4l)."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

from pepi_fleet.node.libc import libc

logger = logging.getLogger(__name__)

_TIME_ERROR = 5
"""adjtimex() state meaning 'clock not synchronised' (STA_UNSYNC set)."""


class _Timex(ctypes.Structure):
    """The leading fields of ``struct timex`` (adjtimex(2)); the tail is padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_char * 256),  # larger than the rest of the kernel's struct
    ]


@dataclass(frozen=True)
class KernelClock:
    """The kernel's NTP state, as the time daemon disciplining the clock left it."""

    synchronised: bool
    esterror_s: float
    """The daemon's estimate of the clock's error."""
    maxerror_s: float
    """Its bound on the error (grows while nothing disciplines the clock)."""


def kernel_clock() -> KernelClock | None:
    """The kernel's view (adjtimex, read only); None where it cannot be read."""
    c = libc()
    if c is None:
        return None
    timex = _Timex()  # modes = 0: read only, allowed unprivileged
    try:
        state = c.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        logger.debug("adjtimex failed: errno %d", ctypes.get_errno())
        return None
    return KernelClock(
        synchronised=state != _TIME_ERROR,
        esterror_s=timex.esterror / 1e6,
        maxerror_s=timex.maxerror / 1e6,
    )


def clock_synchronised() -> bool | None:
    """True/False from the kernel's NTP state (adjtimex); None where it cannot be read."""
    clock = kernel_clock()
    return None if clock is None else clock.synchronised
