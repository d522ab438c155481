"""PEPI's CameraServer (and the FleetCameraServer extension) over Thrift."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TProcessor
from thriftpy2.transport import TBufferedTransportFactory, TSocket, TTransportException

from pepi_fleet.core import idl as pepi_idl
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


class CameraServerHandler:
    """Implements every method of ``FleetCameraServer`` (PEPI's ``CameraServer`` included)."""

    def __init__(
        self,
        node_id: str,
        store: CaptureStore,
        captures: CaptureService,
        stream_urls: Callable[[], list[str]],
        allow_shutdown: bool = False,
        request_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self._idl = pepi_idl.load()
        self._node_id = node_id
        self._store = store
        self._captures = captures
        self._stream_urls = stream_urls
        self._allow_shutdown = allow_shutdown
        self._request_shutdown = request_shutdown

    # -- PEPI CameraServer ----------------------------------------------------------------------

    def ping(self) -> bool:
        return True

    def identify(self) -> str:
        return self._node_id

    def stream_urls(self) -> list[str]:
        return self._stream_urls()

    def shutdown(self) -> None:
        if self._allow_shutdown and self._request_shutdown is not None:
            logger.warning("shutdown() over Thrift: stopping the agent")
            self._request_shutdown()
        else:
            logger.warning("shutdown() over Thrift ignored (start with --allow-shutdown to obey)")

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

    def retrieve_stills_jpg(self, with_data_code: str) -> list[bytes]:
        return self._retrieve_all(with_data_code, "jpeg")

    def retrieve_stills_png(self, with_data_code: str) -> list[bytes]:
        return self._retrieve_all(with_data_code, "png")

    def enumerate_methods(self) -> dict[str, list[str]]:
        service = self._idl.FleetCameraServer
        methods = {}
        for name in service.thrift_services:
            spec = getattr(service, f"{name}_args").thrift_spec
            methods[name] = [spec[key][1] for key in sorted(spec)]
        return methods

    # -- FleetCameraServer ----------------------------------------------------------------------

    def list_captures(self) -> list[Any]:
        return [capture_info(c) for c in self._store.captures()]

    def get_capture(self, capture_id: str) -> Any:
        return capture_info(self._wait(capture_id))

    def fetch_image(self, capture_id: str, camera: int, format: str) -> Any:
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

    def release(self, capture_id: str) -> bool:
        return self._store.release(capture_id)

    # -- helpers --------------------------------------------------------------------------------

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
        except (TTransportException, OSError):
            pass
        except Exception:
            logger.exception("Thrift connection failed")
        finally:
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
