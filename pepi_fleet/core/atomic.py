"""Files that are either whole or absent: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, durable_dir: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` so that ``path`` is either whole or absent.

    The temp file's name is unique per call, so concurrent writers never share one. With
    ``durable_dir`` the directory entry is fsync'd too; a caller that renames the directory
    itself afterwards (the node's staging folders) syncs once at the end instead. ``mode``
    0o600 keeps a secret readable by its owner only, from its first byte on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        write_synced(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable_dir:
        fsync_dir(path.parent)


def write_synced(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write all of ``data`` to ``path`` (created with ``mode``, or truncated) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable (their entries are on disk only after this)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
