"""Thrift clients for tests: PEPI's CameraServer view and the fleet extension."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from thriftpy2.rpc import client_context

from pepi_fleet.core import idl as pepi_idl


@contextmanager
def camera_server(port: int, fleet: bool = False) -> Iterator[Any]:
    """A fresh connection, as PEPI's client makes one per call site."""
    idl = pepi_idl.load()
    service = idl.FleetCameraServer if fleet else idl.CameraServer
    with client_context(
        service, "127.0.0.1", port, socket_timeout=30000, connect_timeout=5000
    ) as client:
        yield client
