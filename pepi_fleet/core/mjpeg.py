"""MJPEG framing both ends share: the node's preview streams and the controller's relay."""

from __future__ import annotations

import math

BOUNDARY = "pepiframe"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
TIMESTAMP_HEADER = "X-Timestamp"
"""Part header: wall-clock time (Unix seconds) the preview was taken; browsers ignore it."""


def encode_part(jpeg: bytes, timestamp: float | None = None, boundary: str = BOUNDARY) -> bytes:
    """One part of a ``multipart/x-mixed-replace`` stream: boundary, headers, JPEG, CRLF."""
    stamp = f"{TIMESTAMP_HEADER}: {timestamp:.6f}\r\n" if timestamp is not None else ""
    head = f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n{stamp}\r\n"
    return head.encode() + jpeg + b"\r\n"


def boundary_of(content_type: str) -> str | None:
    """The ``boundary`` parameter of a ``multipart/x-mixed-replace`` Content-Type, else None."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"')
    return None


def parse_headers(block: bytes) -> dict[str, str]:
    """``Name: value`` lines (CRLF separated) as a dict with lower-case names."""
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def part_timestamp(headers: dict[str, str]) -> float | None:
    """The part's ``X-Timestamp`` as a finite float, or None when absent or not a number."""
    try:
        value = float(headers.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
