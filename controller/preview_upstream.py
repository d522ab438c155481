"""The relay's one connection to a node's MJPEG stream: HTTP GET, then JPEG parts as they come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

from pepi_fleet.core.mjpeg import boundary_of, parse_headers, part_timestamp
from pepi_fleet.schemas.errors import PepiError

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
"""A node sends a frame every 1/fps s; this long without one and the stream is dead."""
MAX_HEAD_BYTES = 16 * 1024
MAX_FRAME_BYTES = 8 * 1024 * 1024
DEFAULT_RETRY_AFTER_S = 5.0
_STREAM_ERRORS = (asyncio.IncompleteReadError, asyncio.LimitOverrunError)


class UpstreamError(PepiError):
    """The node's preview stream could not be read."""


class UpstreamBusy(UpstreamError):
    """The node turned the connection away (503: its MJPEG connection slots are full)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class UpstreamFrame:
    """One JPEG from the node's stream and the time the node says it was taken."""

    jpeg: bytes
    timestamp: float | None


async def pull_mjpeg(
    url: str, read_timeout_s: float = READ_TIMEOUT_S
) -> AsyncGenerator[UpstreamFrame, None]:
    """Every frame of the MJPEG stream at ``url`` (http only), until it ends or fails.

    Raises UpstreamBusy when the node's connection slots are full, UpstreamError for
    anything else (refused, timed out, not an MJPEG stream, a frame over MAX_FRAME_BYTES).
    """
    host, port, target = _split(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES)
    except (OSError, TimeoutError) as exc:
        raise UpstreamError(f"cannot connect to {url}: {exc or 'timed out'}") from exc
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {_host_header(host, port)}\r\n"
            "Accept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n"
            "User-Agent: pepi-fleet-preview-relay\r\n\r\n".encode()
        )
        await writer.drain()
        boundary = await _read_response_head(reader, url, read_timeout_s)
        while True:
            frame = await _read_part(reader, boundary, url, read_timeout_s)
            if frame is None:
                return
            yield frame
    except (OSError, TimeoutError, ValueError, *_STREAM_ERRORS) as exc:
        raise UpstreamError(f"preview stream {url} broke: {exc or 'timed out'}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamError(f"not an http:// preview stream address: {url[:200]!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UpstreamError(f"bad port in preview stream address {url[:200]!r}") from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read_block(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    async with asyncio.timeout(timeout_s):
        return await reader.readuntil(b"\r\n\r\n")


async def _read_response_head(reader: asyncio.StreamReader, url: str, timeout_s: float) -> str:
    head = await _read_block(reader, timeout_s)
    status_line, _, rest = head.partition(b"\r\n")
    fields = status_line.decode("latin-1").split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise UpstreamError(f"{url} did not answer HTTP: {status_line[:80]!r}")
    status, headers = int(fields[1]), parse_headers(rest)
    if status == 503:
        raise UpstreamBusy(
            f"{url} is busy (503: its preview connections are all in use)",
            _retry_after(headers.get("retry-after")),
        )
    if status != 200:
        raise UpstreamError(f"{url} answered {status} instead of a preview stream")
    boundary = boundary_of(headers.get("content-type", ""))
    if boundary is None:
        raise UpstreamError(f"{url} is not an MJPEG stream ({headers.get('content-type')!r})")
    return boundary


async def _read_part(
    reader: asyncio.StreamReader, boundary: str, url: str, timeout_s: float
) -> UpstreamFrame | None:
    """The next part's JPEG; None at the closing boundary or a clean end of stream."""
    marker = f"--{boundary}".encode()
    async with asyncio.timeout(timeout_s):
        while True:  # skip the CRLF after the previous part and any preamble
            line = await reader.readline()
            if not line:
                return None
            line = line.rstrip(b"\r\n")
            if line == marker + b"--":
                return None
            if line == marker:
                break
        headers = parse_headers(await reader.readuntil(b"\r\n\r\n"))
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise UpstreamError(f"{url}: a part without Content-Length")
        if int(length) > MAX_FRAME_BYTES:
            raise UpstreamError(f"{url}: a {length}-byte frame, over {MAX_FRAME_BYTES}")
        jpeg = await reader.readexactly(int(length))
    return UpstreamFrame(jpeg, part_timestamp(headers))


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.5), 60.0)
