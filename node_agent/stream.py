"""MJPEG preview streams over HTTP, one path per camera (PEPI's stream_urls)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

BOUNDARY = "pepiframe"
_PATH = re.compile(r"^/(stream|snapshot)/(\d+)\.(mjpeg|jpg)$")

PreviewSource = Callable[[int], bytes]
"""camera index -> a small JPEG of what it sees now."""


class MjpegServer:
    """``/stream/<n>.mjpeg`` (multipart/x-mixed-replace) and ``/snapshot/<n>.jpg``."""

    def __init__(
        self, preview: PreviewSource, camera_count: int, host: str, port: int, fps: float = 4.0
    ) -> None:
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("stream %s: " + format, self.client_address[0], *args)

        self._preview = preview
        self._count = camera_count
        self._interval = 1.0 / fps
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg", daemon=True)

    def paths(self) -> list[str]:
        """One stream path per camera."""
        return [f"/stream/{n}.mjpeg" for n in range(self._count)]

    def start(self) -> None:
        self._thread.start()
        logger.info("MJPEG streams on port %d", self.port)

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        match = _PATH.match(req.path.split("?", 1)[0])
        if match is None or int(match.group(2)) >= self._count:
            body = f"not found; streams: {', '.join(self.paths())}\n".encode()
            req.send_response(404)
            req.send_header("Content-Type", "text/plain")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
            return
        camera = int(match.group(2))
        if match.group(1) == "snapshot":
            self._send_snapshot(req, camera)
        else:
            self._send_stream(req, camera)

    def _send_snapshot(self, req: BaseHTTPRequestHandler, camera: int) -> None:
        jpeg = self._preview(camera)
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(jpeg)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(jpeg)

    def _send_stream(self, req: BaseHTTPRequestHandler, camera: int) -> None:
        req.send_response(200)
        req.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        try:
            while not self._stopping.is_set():
                jpeg = self._preview(camera)
                req.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                req.wfile.flush()
                self._stopping.wait(self._interval)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            logger.debug("stream client left")
