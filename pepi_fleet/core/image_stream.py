"""Raw image bytes after a Thrift reply (``stream_image``): no copy through Thrift's buffers.

The node answers ``stream_image`` with the image's size and sha256, then waits for one byte
from the client: ``GO`` and it sends exactly ``size`` bytes (``sendfile`` of the stored file),
``DECLINE`` and it sends none. The client asks only once it has read the whole reply, so
nothing of the image can sit in its Thrift read buffer; it hashes the bytes as they arrive and
writes them to its file. Afterwards the connection carries Thrift again.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

GO = b"\x01"
DECLINE = b"\x00"
CHUNK = 1 << 20
"""Largest single receive (and write) of the client."""


class StreamBroken(ConnectionError):
    """The connection failed or closed before every announced byte arrived."""


@dataclass
class PendingStream:
    """What a node sends after its ``stream_image`` reply: an open file or bytes in memory."""

    source: BinaryIO | bytes
    size: int

    def close(self) -> None:
        if not isinstance(self.source, bytes):
            self.source.close()


class PendingStreams:
    """The image a ``stream_image`` reply announced, per connection thread of a server: the
    handler announces it, the connection's loop sends it after the reply (or drops it when
    the connection ends)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def announce(self, pending: PendingStream) -> None:
        """Keep ``pending`` for this thread's connection (closing one announced before)."""
        self.drop()
        self._local.pending = pending

    def take(self) -> PendingStream | None:
        """This thread's announced image, forgotten here (the caller sends or closes it)."""
        pending: PendingStream | None = getattr(self._local, "pending", None)
        self._local.pending = None
        return pending

    def send(self, conn: socket.socket) -> None:
        """After the reply on ``conn``: send the image it announced, if any."""
        pending = self.take()
        if pending is not None:
            serve(conn, pending)

    def drop(self) -> None:
        """Forget (and close) an announced image that will not be sent."""
        pending = self.take()
        if pending is not None:
            pending.close()


def serve(conn: socket.socket, pending: PendingStream) -> int:
    """Wait for the client's answer, then send the image; the bytes sent (0 if declined).

    Raises ConnectionError if the client answers nonsense or the image could not be sent
    whole (the caller drops the connection: the client then sees it end early)."""
    try:
        answer = conn.recv(1)
        if answer == DECLINE:
            return 0
        if answer != GO:
            raise ConnectionError(f"stream_image: the client answered {answer!r}, not GO")
        if isinstance(pending.source, bytes):
            conn.sendall(pending.source)
            return pending.size
        sent = conn.sendfile(pending.source, 0, pending.size)
        if sent != pending.size:
            raise ConnectionError(f"stream_image: sent {sent} of {pending.size} bytes")
        return sent
    finally:
        pending.close()


def receive(sock: socket.socket, size: int, sink: Callable[[memoryview], object]) -> str:
    """Ask for the announced ``size`` bytes, pass each piece to ``sink`` as it arrives and
    return their hex sha256. Raises StreamBroken if the connection fails or ends early; an
    error of ``sink`` propagates (the connection is then mid-stream: close it)."""
    buffer = memoryview(bytearray(max(1, min(CHUNK, size))))
    digest = hashlib.sha256()
    left = size
    try:
        sock.sendall(GO)
    except OSError as exc:
        raise StreamBroken(f"asking for {size} bytes failed: {exc!r}") from exc
    while left:
        try:
            got = sock.recv_into(buffer[: min(left, len(buffer))])
        except OSError as exc:
            raise StreamBroken(f"after {size - left} of {size} bytes: {exc!r}") from exc
        if not got:
            raise StreamBroken(f"the node closed the stream after {size - left} of {size} bytes")
        piece = buffer[:got]
        digest.update(piece)
        sink(piece)
        left -= got
    return digest.hexdigest()


def decline(sock: socket.socket) -> None:
    """Tell the node not to send the announced bytes (the connection stays usable)."""
    try:
        sock.sendall(DECLINE)
    except OSError as exc:
        raise StreamBroken(f"declining the stream failed: {exc!r}") from exc
