"""A tiny raw TCP sender and receiver: the loopback transfer limit retrieval is held against."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.procs import terminate

CHECKOUT = Path(__file__).resolve().parents[1]
"""The folder holding bench/: the sender runs from there (under the wheel's test run too)."""

LISTEN_HOST = "127.0.0.1"
BLOCK = 4 * 1024 * 1024
_COUNT = struct.Struct("!Q")


def serve(port: int) -> None:
    """Answer each connection's 8-byte count with that many bytes, then close it."""
    block = memoryview(bytes(range(256)) * (BLOCK // 256))
    with socket.create_server((LISTEN_HOST, port), backlog=64) as server:
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_send, args=(conn, block), daemon=True).start()


def _send(conn: socket.socket, block: memoryview) -> None:
    with conn:
        (count,) = _COUNT.unpack(_recv_exact(conn, _COUNT.size))
        while count > 0:
            step = min(count, len(block))
            conn.sendall(block[:step])
            count -= step


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed before sending the count")
        data += chunk
    return data


def fetch(port: int, count: int, sink: Callable[[memoryview], object] | None = None) -> int:
    """Receive ``count`` bytes from the server into a reused buffer, each piece handed to
    ``sink`` if one is given; the bytes received."""
    buffer = bytearray(1024 * 1024)
    view = memoryview(buffer)
    received = 0
    with socket.create_connection((LISTEN_HOST, port)) as conn:
        conn.sendall(_COUNT.pack(count))
        while received < count:
            got = conn.recv_into(view)
            if got == 0:
                break
            if sink is not None:
                sink(view[:got])
            received += got
    return received


def fetch_hashed(port: int, count: int, store: Path | None = None) -> int:
    """``fetch`` with the controller's per-byte work and none of its protocol: every piece
    hashed (sha256) as it arrives and, with ``store``, written as the controller writes an
    image (a temp file with writeback started as it goes, fsync'd, renamed into place, the
    folder fsync'd). The bytes received."""
    # the receiving side only: the sender process imports nothing of the package
    from pepi_fleet.core.atomic import fsync_dir
    from pepi_fleet.core.early_write import EarlyWriter

    digest = hashlib.sha256()
    if store is None:
        received = fetch(port, count, digest.update)
        digest.hexdigest()
        return received
    final = store / f"raw-{uuid.uuid4().hex}.bin"
    tmp = final.with_name(f".{final.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write = EarlyWriter(fd)

        def hash_and_write(piece: memoryview) -> None:
            digest.update(piece)
            write(piece)

        received = fetch(port, count, hash_and_write)
        digest.hexdigest()
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return received


class RawServer:
    """The sender as a child process, like a node is one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        """The sender's process id (started)."""
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> RawServer:
        cmd = [sys.executable, "-m", "bench.raw_tcp", "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=CHECKOUT)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"raw TCP server did not start (said {line!r})")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or not terminate(proc, timeout=10):
            return
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.port)


if __name__ == "__main__":
    main()
