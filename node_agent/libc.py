"""The C library, for the few calls Python does not expose (adjtimex, mallopt)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library, looked up once: find_library runs ``ldconfig`` as a child process."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        return ctypes.CDLL(path, use_errno=True)
    except OSError:
        return None
