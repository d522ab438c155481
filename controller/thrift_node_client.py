"""The NodeClient over a node's Thrift ``FleetCameraServer``; Thrift types stay in here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TException
from thriftpy2.transport import TTransportException

from pepi_fleet.controller.node_client import (
    AccessRefused,
    Endpoint,
    NodeUnreachable,
    NotHeld,
    ReceivedImage,
    RetrievalError,
    Sink,
)
from pepi_fleet.core import image_stream
from pepi_fleet.core.idl import load
from pepi_fleet.core.thrift_map import frame_of, result_of
from pepi_fleet.schemas.capture import CaptureResult, Frame

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 15_000


class ThriftNodeClient:
    """One node's ``FleetCameraServer``: connects on the first call, again after a failure.

    Every call carries ``secret()``, the node's secret as last received over MQTT (None
    while none has been: the node then refuses, and the call raises AccessRefused).
    """

    def __init__(
        self,
        node_id: str,
        endpoint: Endpoint,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        secret: Callable[[], str | None] = lambda: None,
    ):
        self.node_id = node_id
        self.host, self.port = endpoint
        self.timeout_ms = timeout_ms
        self._secret = secret
        self._where = f"{self.host}:{self.port}"
        self._client: Any = None

    def list_captures(self) -> list[CaptureResult]:
        """Every capture the node holds; one it describes unreadably is logged and left out."""
        infos = self._call(f"list_captures on {self._where}", lambda c, s: c.list_captures(s))
        held = []
        for info in infos:
            try:
                held.append(result_of(self.node_id, info))
            except ValidationError as exc:
                logger.warning(
                    "node %s lists %r unreadably: %s", self.node_id, info.capture_id, exc
                )
        return held

    def get_capture(self, capture_id: str) -> CaptureResult | None:
        """The capture held under ``capture_id``, or None."""
        try:
            info = self._call(
                f"get_capture of {capture_id} on {self._where}",
                lambda c, s: c.get_capture(capture_id, s),
            )
        except NotHeld:
            return None
        try:
            return result_of(self.node_id, info)
        except ValidationError as exc:
            raise RetrievalError(f"node {self.node_id} describes {capture_id} unreadably") from exc

    def receive_image(
        self, capture_id: str, camera: int, fmt: str, sink: Sink, max_bytes: int
    ) -> ReceivedImage:
        """One image as the node serves it, over ``stream_image``: raw bytes after the reply,
        hashed as they arrive and handed to ``sink`` (no copy through Thrift's buffers)."""
        head = self._call(
            f"stream_image of {capture_id} from {self._where}",
            lambda c, s: c.stream_image(capture_id, camera, fmt, s),
        )
        size = int(head.size or 0)
        sock = self._client._iprot.trans.sock
        try:
            if not 0 <= size <= max_bytes:
                image_stream.decline(sock)
                raise RetrievalError(
                    f"node {self.node_id} announces {size} bytes for {capture_id} camera "
                    f"{camera}, expected at most {max_bytes}: not received"
                )
            sha256 = image_stream.receive(sock, size, sink)
        except image_stream.StreamBroken as exc:
            self.close()
            what = f"stream_image of {capture_id} from {self._where}"
            raise NodeUnreachable(f"{what}: {exc}") from exc
        except OSError:
            self.close()  # the sink failed mid-stream: the rest of the bytes are still coming
            raise
        return ReceivedImage(
            size=size, sha256=sha256, reported_sha256=head.sha256 or "", frame=_frame(head.frame)
        )

    def release(self, capture_id: str) -> bool:
        """Delete the capture on the node; False if it held none under that id."""
        return bool(
            self._call(
                f"release of {capture_id} on {self._where}", lambda c, s: c.release(capture_id, s)
            )
        )

    def release_matching(self, capture_id: str, expected: dict[int, str]) -> str | None:
        """Delete the held capture with these checksums on the node; the id deleted, or None."""
        released = self._call(
            f"release of {capture_id} on {self._where}",
            lambda c, s: c.release_matching(capture_id, expected, s),
        )
        return str(released) if released else None

    def close(self) -> None:
        """Close the connection, if one is open."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _connected(self) -> Any:
        if self._client is None:
            try:
                self._client = make_client(
                    load().FleetCameraServer, self.host, self.port, timeout=self.timeout_ms
                )
            except (TException, OSError) as exc:
                raise NodeUnreachable(
                    f"cannot reach node at {self._where}: {exc or type(exc).__name__}"
                ) from exc
        return self._client

    def _call(self, what: str, call: Callable[[Any, str | None], Any]) -> Any:
        """``call(client, secret)``; ``what`` names it in the error if the node cannot answer.

        A call that fails on a connection kept from earlier calls (the node restarted, or
        dropped it while idle) is tried once more on a new one: every call here may be
        repeated (a release that already happened answers None the second time)."""
        reused = self._client is not None
        try:
            return self._call_once(what, call)
        except NodeUnreachable as exc:
            if not reused or not isinstance(exc.__cause__, (TTransportException, OSError)):
                raise
            logger.debug("%s: kept connection failed (%s), reconnecting", what, exc)
            return self._call_once(what, call)

    def _call_once(self, what: str, call: Callable[[Any, str | None], Any]) -> Any:
        client = self._connected()
        secret = self._secret()
        try:
            return call(client, secret)
        except load().ImageUnavailable as exc:
            raise NotHeld(f"node no longer has it: {exc.message}") from exc
        except load().Unauthorized as exc:
            hint = (
                "no secret from it yet: may the controller's MQTT user read its secret topic?"
                if secret is None
                else "its secret has changed since: the new one arrives over MQTT"
            )
            raise AccessRefused(f"{what}: node {self.node_id} refused ({hint})") from exc
        except (TException, OSError) as exc:
            self.close()  # the connection is in an unknown state: the next call reconnects
            raise NodeUnreachable(f"{what}: {exc!r}") from exc


def _frame(info: Any) -> Frame | None:
    if info is None:
        return None
    try:
        return frame_of(info)
    except ValidationError:
        return None
