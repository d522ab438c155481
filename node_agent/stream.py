"""MJPEG preview streams over HTTP, one path per camera (PEPI's stream_urls)."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pepi_fleet.core.mjpeg import CONTENT_TYPE, encode_part
from pepi_fleet.node.slots import ConnectionSlots, Slot

logger = logging.getLogger(__name__)

_PATH = re.compile(r"^/(stream|snapshot)/(\d+)\.(mjpeg|jpg)$")

MAX_CLIENTS = 16
"""Viewers at once (each holds a thread while it watches)."""
CLIENT_TIMEOUT_S = 10.0
"""A client that sends nothing, or reads nothing, for this long is dropped."""
WRITE_GRACE_S = 1.0
"""A viewer whose frame has not gone out for this long gives its slot to a newcomer."""
_BUSY_BODY = b"too many preview clients: retry later\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Retry-After: 5\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
"""Sent (without waiting) to a client turned away because every slot is busy."""

PreviewSource = Callable[[int], bytes]
"""camera index -> a small JPEG of what it sees now."""


class _BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that admits a connection only into a free (or freed) slot."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops a burst of connects for a second

    def __init__(self, address: tuple[str, int], handler: Any, slots: ConnectionSlots) -> None:
        super().__init__(address, handler)
        self.slots = slots

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.slots.admit(request) is None:
            with contextlib.suppress(OSError):
                request.send(BUSY, socket.MSG_DONTWAIT)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.slots.release(request)
        super().shutdown_request(request)


class MjpegServer:
    """``/stream/<n>.mjpeg`` (multipart/x-mixed-replace) and ``/snapshot/<n>.jpg``.

    At most ``max_clients`` connections (and so threads); a client idle or stuck for
    ``client_timeout_s`` is dropped, and idle or non-reading ones give way to newcomers.
    """

    def __init__(
        self,
        preview: PreviewSource,
        camera_count: int,
        host: str,
        port: int,
        fps: float = 4.0,
        max_clients: int = MAX_CLIENTS,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        self._stopping = threading.Event()
        server = self
        self.slots = ConnectionSlots("MJPEG", max_clients, write_grace_s=WRITE_GRACE_S)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = client_timeout_s  # socket timeout of every read and write

            def handle_one_request(self) -> None:
                slot = server.slots.slot(self.connection)
                if slot is None:  # evicted
                    self.close_connection = True
                    return
                slot.reading()
                super().handle_one_request()

            def do_GET(self) -> None:
                slot = server.slots.slot(self.connection)
                if slot is None:
                    self.close_connection = True
                    return
                server._serve(self, slot)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("stream %s: " + format, self.client_address[0], *args)

        self._preview = preview
        self._count = camera_count
        self._interval = 1.0 / fps
        self._httpd = _BoundedHTTPServer((host, port), Handler, self.slots)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg", daemon=True)

    def paths(self) -> list[str]:
        """One stream path per camera."""
        return [f"/stream/{n}.mjpeg" for n in range(self._count)]

    def start(self) -> None:
        self._thread.start()
        logger.info("MJPEG streams on port %d (at most %d clients)", self.port, self.slots.limit)

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self.slots.hang_up_all()
        self._thread.join(timeout=5)

    def _serve(self, req: BaseHTTPRequestHandler, slot: Slot) -> None:
        slot.working()
        match = _PATH.match(req.path.split("?", 1)[0])
        if match is None or int(match.group(2)) >= self._count:
            body = f"not found; streams: {', '.join(self.paths())}\n".encode()
            req.send_response(404)
            req.send_header("Content-Type", "text/plain")
            req.send_header("Content-Length", str(len(body)))
            slot.writing()
            req.end_headers()
            req.wfile.write(body)
            return
        camera = int(match.group(2))
        if match.group(1) == "snapshot":
            self._send_snapshot(req, slot, camera)
        else:
            self._send_stream(req, slot, camera)

    def _send_snapshot(self, req: BaseHTTPRequestHandler, slot: Slot, camera: int) -> None:
        jpeg = self._preview(camera)
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(jpeg)))
        req.send_header("Cache-Control", "no-store")
        slot.writing()
        req.end_headers()
        req.wfile.write(jpeg)

    def _send_stream(self, req: BaseHTTPRequestHandler, slot: Slot, camera: int) -> None:
        req.send_response(200)
        req.send_header("Content-Type", CONTENT_TYPE)
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        req.close_connection = True
        try:
            slot.writing()
            req.end_headers()
            while not self._stopping.is_set():
                slot.working()
                taken_at = time.time()
                jpeg = self._preview(camera)
                slot.writing()
                req.wfile.write(encode_part(jpeg, taken_at))
                req.wfile.flush()
                slot.working()
                self._stopping.wait(self._interval)
        except OSError:  # gone, timed out (TimeoutError), or dropped for a newcomer
            logger.debug("stream client left")
