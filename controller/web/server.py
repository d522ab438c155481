"""Runs the web app with uvicorn in a background thread of ``pepi controller``."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn

from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.app import create_app
from pepi_fleet.controller.web.security import WebAccess
from pepi_fleet.schemas.errors import PepiError

logger = logging.getLogger(__name__)

WILDCARDS = ("", "0.0.0.0", "::")


class WebError(PepiError):
    """The web page and REST API could not be served."""


class WebServer:
    """``start()`` binds at once (a taken port fails there, clearly), ``stop()`` ends streams."""

    def __init__(
        self,
        controller: Controller,
        host: str = "127.0.0.1",
        port: int = 8080,
        access: WebAccess | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: certificate (chain) and key files, PEM, to serve HTTPS."""
        self.app = create_app(controller, access)
        self.host = host
        self.port = port
        self.tls = tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The page's address (this machine's name when listening on every interface)."""
        host = socket.gethostname() if self.host in WILDCARDS else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> None:
        """Listen and serve; returns once uvicorn accepts requests."""
        self._socket = bind(self.host, self.port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        try:
            config.load()  # reads the certificate and key now: a bad one fails here, clearly
        except (OSError, ValueError) as exc:
            self.stop()
            raise WebError(f"cannot serve HTTPS with --tls-cert/--tls-key: {exc}") from exc
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name="web", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise WebError(f"the web server on {self.url} did not start: see the log above")
            time.sleep(0.02)
        logger.info("web page and REST API on %s", self.url)

    def stop(self) -> None:
        """End live event streams, stop uvicorn and release the port."""
        self.app.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                logger.warning("web server thread did not stop within 10 s")
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or a WebError that says what to change."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise WebError(f"web host {host!r} is not a known address: fix --web-host") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise WebError(
                f"web port {port} on {host} is already in use: stop what uses it "
                "or choose another with --web-port"
            ) from exc
        raise WebError(f"cannot serve the web page on {host}:{port}: {exc.strerror}") from exc
    return sock
