"""PEPI's CameraServer (and the FleetCameraServer extension) over Thrift."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TApplicationException, TProcessor
from thriftpy2.transport import TBufferedTransportFactory, TSocket, TTransportException

from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.core import image_stream
from pepi_fleet.core.mqtt_link import LogThrottle
from pepi_fleet.core.thrift_map import capture_info, frame_info
from pepi_fleet.node.capture_service import CaptureRequest, CaptureService
from pepi_fleet.node.slots import ConnectionSlots, Slot
from pepi_fleet.node.store import CaptureStore, StoredCapture
from pepi_fleet.schemas.capture import CaptureCommand
from pepi_fleet.schemas.errors import PayloadError, StoreError
from pepi_fleet.schemas.ids import validate_capture_id

logger = logging.getLogger(__name__)

RETRIEVE_WAIT_S = 15.0
"""How long a retrieve waits for a capture still being taken before ImageUnavailable."""
CLIENT_TIMEOUT_S = 60.0
"""Idle/slow client cut-off; large images over Wi-Fi need more than thriftpy2's 3 s."""
MAX_CLIENTS = 32
"""Connections (and threads) at once: the controller, PEPI's clients and their pings."""
WRITE_GRACE_S = 10.0
"""A reply stuck this long (a client that does not read) may give its slot to a newcomer."""

_FORMATS = {"jpeg", "jpg", "png", "raw"}
PEPI_OFF = "PEPI's methods are off on this node (--thrift-pepi off): use the controller"

M = TypeVar("M", bound=Callable[..., Any])


def pepi_method(method: M) -> M:
    """A method of PEPI's ``CameraServer``: refused while PEPI's methods are off.

    A oneway call gets no answer (one written back would be read as the answer to the
    client's next call), so it is only logged.
    """
    name = method.__name__

    @functools.wraps(method)
    def guarded(self: CameraServerHandler, *args: Any) -> Any:
        if self.pepi_methods:
            return method(self, *args)
        held = self._refusals.allow()
        if held is not None:
            logger.warning("Thrift %s refused (%d more since the last): %s", name, held, PEPI_OFF)
        if getattr(self._idl.CameraServer, f"{name}_result").oneway:
            return None
        raise TApplicationException(TApplicationException.UNKNOWN_METHOD, f"{name}: {PEPI_OFF}")

    return guarded  # type: ignore[return-value]


class CameraServerHandler:
    """Implements every method of ``FleetCameraServer`` (PEPI's ``CameraServer`` included).

    The extension's calls must carry ``secret``; PEPI's take none and can be switched
    off altogether (``pepi_methods=False``) on rigs without PEPI clients.
    """

    def __init__(
        self,
        node_id: str,
        store: CaptureStore,
        captures: CaptureService,
        stream_urls: Callable[[], list[str]],
        secret: str,
        allow_shutdown: bool = False,
        request_shutdown: Callable[[], None] | None = None,
        pepi_methods: bool = True,
    ) -> None:
        self._idl = pepi_idl.load()
        self._node_id = node_id
        self._store = store
        self._captures = captures
        self._stream_urls = stream_urls
        self._secret = secret.encode()
        self._allow_shutdown = allow_shutdown
        self._request_shutdown = request_shutdown
        self.pepi_methods = pepi_methods
        # a host that keeps calling without the secret is logged once a minute, not per call
        self._refusals = LogThrottle(60.0)
        # per connection thread: the image a ``stream_image`` reply announced, sent after it
        self._streams = image_stream.PendingStreams()

    # -- PEPI CameraServer ----------------------------------------------------------------------

    @pepi_method
    def ping(self) -> bool:
        return True

    @pepi_method
    def identify(self) -> str:
        return self._node_id

    @pepi_method
    def stream_urls(self) -> list[str]:
        return self._stream_urls()

    @pepi_method
    def shutdown(self) -> None:
        if self._allow_shutdown and self._request_shutdown is not None:
            logger.warning("shutdown() over Thrift: stopping the agent")
            self._request_shutdown()
        else:
            logger.warning("shutdown() over Thrift ignored (start with --allow-shutdown to obey)")

    @pepi_method
    def start_capture(self, data_code: str) -> None:
        try:
            validate_capture_id(data_code)
        except PayloadError as exc:
            # oneway: the caller cannot be told; the log and an MQTT-less no-op is all we can do
            logger.error("start_capture over Thrift refused: %s", exc)
            return
        self._captures.submit(
            CaptureRequest(
                command=CaptureCommand(capture_id=data_code),
                received_at=time.time(),
                source="thrift",
                recapture=True,
            )
        )

    @pepi_method
    def retrieve_stills_jpg(self, with_data_code: str) -> list[bytes]:
        return self._retrieve_all(with_data_code, "jpeg")

    @pepi_method
    def retrieve_stills_png(self, with_data_code: str) -> list[bytes]:
        return self._retrieve_all(with_data_code, "png")

    @pepi_method
    def enumerate_methods(self) -> dict[str, list[str]]:
        service = self._idl.FleetCameraServer
        methods = {}
        for name in service.thrift_services:
            spec = getattr(service, f"{name}_args").thrift_spec
            methods[name] = [spec[key][1] for key in sorted(spec)]
        return methods

    # -- FleetCameraServer ----------------------------------------------------------------------

    def list_captures(self, secret: str | None = None) -> list[Any]:
        self._authorise("list_captures", secret)
        return [capture_info(c) for c in self._store.captures()]

    def get_capture(self, capture_id: str, secret: str | None = None) -> Any:
        self._authorise("get_capture", secret)
        return capture_info(self._wait(capture_id))

    def fetch_image(
        self, capture_id: str, camera: int, format: str, secret: str | None = None
    ) -> Any:
        self._authorise("fetch_image", secret)
        fmt = self._format(format)
        self._wait(capture_id)
        try:
            data, frame = self._store.read_image(capture_id, camera, fmt)
        except StoreError as exc:
            raise self._idl.ImageUnavailable(message=str(exc)) from exc
        # The stored image's checksum was taken when it was written; the receiver verifies
        # the bytes against it. A converted image is hashed as served.
        sha256 = frame.sha256 if fmt == frame.format else hashlib.sha256(data).hexdigest()
        return self._idl.ImageBlob(data=data, sha256=sha256, frame=frame_info(frame))

    def stream_image(
        self, capture_id: str, camera: int, format: str, secret: str | None = None
    ) -> Any:
        self._authorise("stream_image", secret)
        fmt = self._format(format)
        self._wait(capture_id)
        try:
            stored, frame = self._store.open_image(capture_id, camera)
        except StoreError as exc:
            raise self._idl.ImageUnavailable(message=str(exc)) from exc
        if fmt == frame.format:
            # The checksum taken when it was written; the receiver verifies against it.
            size, sha256 = os.fstat(stored.fileno()).st_size, frame.sha256
            pending = image_stream.PendingStream(stored, size)
        else:
            stored.close()
            try:
                data, frame = self._store.read_image(capture_id, camera, fmt)
            except StoreError as exc:
                raise self._idl.ImageUnavailable(message=str(exc)) from exc
            size, sha256 = len(data), hashlib.sha256(data).hexdigest()
            pending = image_stream.PendingStream(data, size)
        self._streams.announce(pending)
        return self._idl.ImageStream(size=size, sha256=sha256, frame=frame_info(frame))

    def send_stream(self, conn: socket.socket) -> None:
        """After a ``stream_image`` reply on this thread's connection: send its image."""
        self._streams.send(conn)

    def drop_stream(self) -> None:
        """Forget (and close) an announced image that will not be sent."""
        self._streams.drop()

    def release(self, capture_id: str, secret: str | None = None) -> bool:
        self._authorise("release", secret)
        return self._store.release(capture_id)

    def release_matching(
        self, capture_id: str, sha256s: dict[int, str] | None, secret: str | None = None
    ) -> str:
        self._authorise("release_matching", secret)
        return self._store.release_matching(capture_id, dict(sha256s or {})) or ""

    # -- helpers --------------------------------------------------------------------------------

    def _authorise(self, method: str, secret: str | None) -> None:
        """Refuse an extension call whose secret is missing or wrong, before it does anything."""
        given = (secret or "").encode("utf-8", errors="replace")
        if given and hmac.compare_digest(given, self._secret):
            return
        what = "without the node's secret" if not given else "with a wrong secret"
        held = self._refusals.allow()
        if held is not None:
            logger.warning("Thrift %s %s refused (and %d more since the last)", method, what, held)
        raise self._idl.Unauthorized(
            message=f"{method} {what}: nothing was done. The fleet extension of node "
            f"{self._node_id} needs the secret it publishes for the controller "
            "(PEPI's methods need none)"
        )

    def _retrieve_all(self, code: str, fmt: str) -> list[bytes]:
        capture = self._wait(code)
        images = []
        for frame in capture.frames:
            try:
                data, _ = self._store.read_image(code, frame.camera, self._format(fmt))
            except StoreError as exc:
                raise self._idl.ImageUnavailable(message=str(exc)) from exc
            images.append(data)
        return images

    def _wait(self, capture_id: str) -> StoredCapture:
        try:
            validate_capture_id(capture_id)
            return self._store.wait_for(capture_id, timeout=RETRIEVE_WAIT_S)
        except (PayloadError, StoreError) as exc:
            raise self._idl.ImageUnavailable(message=str(exc)) from exc

    def _format(self, fmt: str) -> Any:
        fmt = fmt.lower()
        if fmt not in _FORMATS:
            raise self._idl.ImageUnavailable(
                message=f"unknown format {fmt[:20]!r}: use jpeg, png or raw"
            )
        return "jpeg" if fmt == "jpg" else fmt


class ThriftServer:
    """A threaded Thrift server (one thread per connection, at most ``max_clients``) that can
    be stopped cleanly. Idle and slow clients give way to new ones (``ConnectionSlots``)."""

    def __init__(
        self,
        handler: CameraServerHandler,
        host: str,
        port: int,
        max_clients: int = MAX_CLIENTS,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
    ) -> None:
        self._service = pepi_idl.load().FleetCameraServer
        self._handler = handler
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._timeout = client_timeout_s
        self.slots = ConnectionSlots("Thrift", max_clients, write_grace_s=WRITE_GRACE_S)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="thrift-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()
        logger.info(
            "Thrift CameraServer on %s:%d (at most %d clients)",
            self.host,
            self.port,
            self.slots.limit,
        )

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                logger.exception("accept failed")
                continue
            slot = self.slots.admit(conn)
            if slot is None:
                conn.close()
                continue
            conn.settimeout(self._timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._handle, args=(conn, slot), name="thrift-conn", daemon=True
            ).start()

    def _handle(self, conn: socket.socket, slot: Slot) -> None:
        processor = _TrackedProcessor(self._service, self._handler, slot)
        trans_factory = TBufferedTransportFactory()
        proto_factory = TBinaryProtocolFactory()
        itrans = trans_factory.get_transport(TSocket(sock=conn))
        otrans = trans_factory.get_transport(TSocket(sock=conn))
        iprot, oprot = proto_factory.get_protocol(itrans), proto_factory.get_protocol(otrans)
        try:
            while not self._stopping.is_set():
                processor.process(iprot, oprot)
                self._handler.send_stream(conn)
        except (TTransportException, OSError):
            pass
        except Exception:
            logger.exception("Thrift connection failed")
        finally:
            self._handler.drop_stream()
            self.slots.release(conn)
            itrans.close()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.slots.hang_up_all()
        self._thread.join(timeout=5)


class _TrackedProcessor(TProcessor):
    """Keeps the connection's slot up to date: reading a request, running the handler,
    writing the reply. Only a connection running the handler is never evicted."""

    def __init__(self, service: Any, handler: CameraServerHandler, slot: Slot) -> None:
        super().__init__(service, handler)
        self._slot = slot

    def process_in(self, iprot: Any) -> tuple[str, int, Any, Callable[[], Any] | None]:
        self._slot.reading()
        api, seqid, result, call = super().process_in(iprot)
        self._slot.working()
        if call is None:
            return api, seqid, result, None

        def tracked() -> Any:
            try:
                return call()
            finally:
                self._slot.writing()

        return api, seqid, result, tracked


def identify_server(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """What ``identify()`` answers at ``host:port`` (a running node's id), None if nothing does.

    For ``pepi doctor``: a port in use by this node's own agent is not a problem."""
    from thriftpy2.rpc import client_context

    timeout_ms = int(timeout_s * 1000)
    try:
        with client_context(
            pepi_idl.load().CameraServer,
            host,
            port,
            connect_timeout=timeout_ms,
            socket_timeout=timeout_ms,
        ) as client:
            return str(client.identify())
    except Exception:  # anything else listening there is not a CameraServer
        return None
