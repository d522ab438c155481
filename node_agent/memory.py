"""Keeps a node's resident memory near what it holds, not what it once peaked at.

A node allocates and frees frame-sized buffers (6 MB at 1080p, 37 MB at 12 MP) all the time.
glibc serves large blocks with mmap and gives them back on free, but after the first such
free it raises its mmap threshold to that size, so later frames come from the heap, which
it rarely returns to the kernel: a 1080p node then idles ~20 MB and peaks ~40 MB higher
(``python -m bench.footprint``). Pinning the threshold keeps frames on mmap.
"""

from __future__ import annotations

import logging

from pepi_fleet.node.libc import libc

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's default: blocks above it are mmap'd. Setting it explicitly turns off its growth."""


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold; False where the C library has no ``mallopt`` (not glibc)."""
    c = libc()
    mallopt = getattr(c, "mallopt", None) if c is not None else None
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        logger.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return ok
