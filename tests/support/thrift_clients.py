"""Thrift clients for tests: PEPI's CameraServer view and the fleet extension."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thriftpy2.rpc import client_context

from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.node.secret import SECRET_FILE


@contextmanager
def camera_server(port: int, fleet: bool = False) -> Iterator[Any]:
    """A fresh connection, as PEPI's client makes one per call site."""
    idl = pepi_idl.load()
    service = idl.FleetCameraServer if fleet else idl.CameraServer
    with client_context(
        service, "127.0.0.1", port, socket_timeout=30000, connect_timeout=5000
    ) as client:
        yield client


def node_secret(data_dir: Path) -> str:
    """The secret a node keeps in its data dir (what the controller learns over MQTT)."""
    return (data_dir / SECRET_FILE).read_text().strip()


class FleetClient:
    """The extension as the controller calls it: each call carries the node's secret.

    PEPI's methods pass through unchanged.
    """

    def __init__(self, client: Any, secret: str) -> None:
        self._client = client
        self._secret = secret

    def list_captures(self) -> Any:
        return self._client.list_captures(self._secret)

    def get_capture(self, capture_id: str) -> Any:
        return self._client.get_capture(capture_id, self._secret)

    def fetch_image(self, capture_id: str, camera: int, fmt: str) -> Any:
        return self._client.fetch_image(capture_id, camera, fmt, self._secret)

    def release(self, capture_id: str) -> Any:
        return self._client.release(capture_id, self._secret)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@contextmanager
def fleet_server(port: int, data_dir: Path) -> Iterator[FleetClient]:
    """The fleet extension of the node serving ``port`` whose data dir is ``data_dir``."""
    with camera_server(port, fleet=True) as client:
        yield FleetClient(client, node_secret(data_dir))
