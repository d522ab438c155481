"""TEST TOOL - the fleet simulator's Thrift side: many FleetCameraServer endpoints, one thread.

Each virtual node gets its own listening socket on loopback and its own handler behind a real
``TProcessor`` of the project's IDL (``pepi.thrift``), so the controller's ``ThriftNodeClient``
talks to it exactly as to a ``pepi node``. One selector thread accepts on every socket; each
accepted connection is served on its own short-lived thread (the controller opens a handful at
a time). This is not the node agent's server: no connection caps, no retrieve waits.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import selectors
import socket
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TProcessor
from thriftpy2.transport import TBufferedTransportFactory, TSocket, TTransportException

from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.core import image_stream
from pepi_fleet.core.thrift_map import HeldCapture, capture_info, frame_info

logger = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 30.0


class SimCapture(HeldCapture, Protocol):
    """What a virtual node holds of one capture: ``thrift_map.HeldCapture`` plus the bytes."""

    @property
    def images(self) -> dict[int, bytes]: ...


class SimStore(Protocol):
    """A virtual node's captures, as its Thrift handler needs them."""

    node_id: str
    secret: str

    def held(self) -> Sequence[SimCapture]: ...
    def get(self, capture_id: str) -> SimCapture | None: ...
    def mark_retrieved(self, capture_id: str) -> None: ...
    def release(self, capture_id: str) -> bool: ...
    def start_capture(self, capture_id: str) -> None: ...


class SimHandler:
    """``FleetCameraServer`` over a ``SimStore`` (PEPI's methods included, PNG excepted)."""

    def __init__(self, store: SimStore) -> None:
        self._idl = pepi_idl.load()
        self._store = store
        self.fetches = 0
        self._streams = image_stream.PendingStreams()  # as the node's handler
        self.refused = 0

    def ping(self) -> bool:
        return True

    def identify(self) -> str:
        return self._store.node_id

    def stream_urls(self) -> list[str]:
        return []

    def shutdown(self) -> None:
        logger.info("shutdown() on simulated node %s ignored", self._store.node_id)

    def start_capture(self, data_code: str) -> None:
        self._store.start_capture(data_code)

    def retrieve_stills_jpg(self, with_data_code: str) -> list[bytes]:
        capture = self._held(with_data_code)
        return [capture.images[f.camera] for f in capture.frames]

    def retrieve_stills_png(self, with_data_code: str) -> list[bytes]:
        raise self._idl.ImageUnavailable(message="the fleet simulator stores JPEG only")

    def enumerate_methods(self) -> dict[str, list[str]]:
        service = self._idl.FleetCameraServer
        return {
            name: [
                spec[1] for _, spec in sorted(getattr(service, f"{name}_args").thrift_spec.items())
            ]
            for name in service.thrift_services
        }

    def list_captures(self, secret: str | None = None) -> list[Any]:
        self._authorise("list_captures", secret)
        return [capture_info(c) for c in self._store.held()]

    def get_capture(self, capture_id: str, secret: str | None = None) -> Any:
        self._authorise("get_capture", secret)
        return capture_info(self._held(capture_id))

    def fetch_image(
        self, capture_id: str, camera: int, format: str, secret: str | None = None
    ) -> Any:
        self._authorise("fetch_image", secret)
        data, frame = self._image(capture_id, camera, format)
        return self._idl.ImageBlob(data=data, sha256=frame.sha256, frame=frame_info(frame))

    def stream_image(
        self, capture_id: str, camera: int, format: str, secret: str | None = None
    ) -> Any:
        self._authorise("stream_image", secret)
        data, frame = self._image(capture_id, camera, format)
        self._streams.announce(image_stream.PendingStream(data, len(data)))
        return self._idl.ImageStream(size=len(data), sha256=frame.sha256, frame=frame_info(frame))

    def send_stream(self, conn: socket.socket) -> None:
        """After a ``stream_image`` reply on this thread's connection: send its image."""
        self._streams.send(conn)

    def release(self, capture_id: str, secret: str | None = None) -> bool:
        self._authorise("release", secret)
        return self._store.release(capture_id)

    def release_matching(
        self, capture_id: str, sha256s: dict[int, str] | None, secret: str | None = None
    ) -> str:
        self._authorise("release_matching", secret)
        expected = dict(sha256s or {})
        held = {c.capture_id: c for c in self._store.held()}
        ours = held.get(capture_id)
        target = None
        if ours is not None and {f.camera: f.sha256 for f in ours.frames} == expected:
            target = capture_id
        elif expected:
            camera, sha256 = next(iter(expected.items()))
            target = next(
                (
                    c.capture_id
                    for c in held.values()
                    if any(f.camera == camera and f.sha256 == sha256 for f in c.frames)
                ),
                None,
            )
        return target if target is not None and self._store.release(target) else ""

    def _image(self, capture_id: str, camera: int, format: str) -> tuple[bytes, Any]:
        capture = self._held(capture_id)
        frame = next((f for f in capture.frames if f.camera == camera), None)
        if frame is None or format.lower() not in ("jpeg", "jpg"):
            raise self._idl.ImageUnavailable(message=f"no {format} of camera {camera}")
        self.fetches += 1
        self._store.mark_retrieved(capture_id)
        return capture.images[camera], frame

    def _authorise(self, method: str, secret: str | None) -> None:
        """The node's rule: an extension call without the node's secret does nothing."""
        given = (secret or "").encode()
        if not given or not hmac.compare_digest(given, self._store.secret.encode()):
            self.refused += 1
            what = f"{method}: not the secret of node {self._store.node_id}"
            raise self._idl.Unauthorized(message=what)

    def _held(self, capture_id: str) -> SimCapture:
        capture = self._store.get(capture_id)
        if capture is None:
            raise self._idl.ImageUnavailable(message=f"capture {capture_id!r} not held")
        return capture


class ThriftHost:
    """Listening sockets for many handlers; ``add`` before ``start``, ``stop`` closes all."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self._service = pepi_idl.load().FleetCameraServer
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="sim-thrift", daemon=True)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def add(self, handler: SimHandler, port: int = 0) -> int:
        """Listen for ``handler`` on ``port`` (0: any free one); the port it got."""
        sock = socket.create_server((self.host, port), backlog=64)
        sock.setblocking(False)
        processor = TProcessor(self._service, handler)
        self._selector.register(sock, selectors.EVENT_READ, (processor, handler))
        self._listeners.append(sock)
        return int(sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                listener: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, OSError):
                    continue
                conn.setblocking(True)
                conn.settimeout(CLIENT_TIMEOUT_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self._conns.add(conn)
                threading.Thread(
                    target=self._serve, args=(conn, *key.data), name="sim-thrift-conn", daemon=True
                ).start()

    def _serve(self, conn: socket.socket, processor: TProcessor, handler: SimHandler) -> None:
        # thriftpy2 carries no annotations: its factories are untyped to mypy
        transports: Any = TBufferedTransportFactory()
        protocols: Any = TBinaryProtocolFactory()  # type: ignore[no-untyped-call]
        sock: Any = TSocket
        itrans = transports.get_transport(sock(sock=conn))
        otrans = transports.get_transport(sock(sock=conn))
        iprot, oprot = protocols.get_protocol(itrans), protocols.get_protocol(otrans)
        try:
            while not self._stopping.is_set():
                processor.process(iprot, oprot)
                handler.send_stream(conn)
        except (TTransportException, OSError):
            pass
        except Exception:
            logger.exception("simulated Thrift connection failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
            itrans.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in self._listeners:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
