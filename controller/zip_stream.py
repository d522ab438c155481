"""A zip written while it is sent: files and generated documents, stored, memory ~one chunk."""

from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024

ZipMember = tuple[str, Path | bytes]
"""(name in the zip, the file to read or the bytes to store)."""


class _Sink(io.RawIOBase):
    """A write-only, unseekable buffer zipfile writes into while we hand out its chunks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def stream_zip(members: Iterable[ZipMember]) -> Iterator[bytes]:
    """Yield a zip of ``members`` chunk by chunk (stored, not recompressed: JPEGs don't shrink).

    A file that cannot be read any more is left out with a warning: the zip is already on
    its way, so it cannot turn into an error answer.
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
        for arcname, source in members:
            if isinstance(source, bytes):
                info = zipfile.ZipInfo(arcname, time.localtime()[:6])
                zf.writestr(info, source)
                yield sink.take()
                continue
            try:
                src = source.open("rb")
            except OSError as exc:
                logger.warning("zip: skipping %s: %s", source, exc)
                continue
            with src:
                stat = source.stat()
                info = zipfile.ZipInfo(arcname, time.localtime(stat.st_mtime)[:6])
                info.file_size = stat.st_size  # lets zipfile choose zip64 up front
                with zf.open(info, "w") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        yield sink.take()
            yield sink.take()
    yield sink.take()
