"""A file written piece by piece whose pages start going to disk while later pieces arrive.

Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts writeback of a range without
waiting for it, so the ``fsync`` that makes the file durable at the end waits for the tail
only, instead of for the whole file after the transfer. It promises nothing about durability
(the fsync still does that); where it is missing, pieces are only written.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_STEP = 512 * 1024
"""Bytes written between two writeback requests."""

_Call = Callable[[int, int, int, int], int]


@functools.cache
def _sync_file_range() -> _Call | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


class EarlyWriter:
    """Writes every piece it is given to ``fd`` (from its current offset 0 on), asking the
    kernel every ``step`` bytes to start writing what came so far to disk."""

    def __init__(self, fd: int, step: int = WRITEBACK_STEP) -> None:
        self._fd = fd
        self._step = step
        self.written = 0
        self._started = 0  # bytes whose writeback was requested
        self._sync = _sync_file_range()

    def __call__(self, piece: memoryview) -> None:
        view = piece
        while view:
            view = view[os.write(self._fd, view) :]
        self.written += len(piece)
        if self._sync is not None and self.written - self._started >= self._step:
            # A failure here (an odd file system) only loses the head start.
            self._sync(self._fd, self._started, self.written - self._started, SYNC_FILE_RANGE_WRITE)
            self._started = self.written
