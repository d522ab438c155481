"""Node clients kept connected between download passes, at most a few, least recently used out.

A pass takes its node's client (and its open connection) if one is idle and gives it back when
it ends: a node's next capture is fetched without a new connection and Thrift client. Only
``limit`` clients stay idle, so a fleet of 1000 nodes does not hold 1000 sockets; the one used
longest ago is closed to make room. A client whose connection went stale reconnects on its own
(``ThriftNodeClient`` retries a call that failed on a reused connection once, on a new one).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from pepi_fleet.controller.node_client import Endpoint, NodeClient

IDLE_LIMIT = 32
"""Clients kept connected while no pass uses them."""


class IdleClients:
    """Idle node clients by (node, endpoint), least recently used first; thread-safe."""

    def __init__(self, limit: int = IDLE_LIMIT) -> None:
        self._limit = limit
        self._idle: OrderedDict[tuple[str, Endpoint], NodeClient] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, node_id: str, endpoint: Endpoint) -> NodeClient | None:
        """The node's idle client for this endpoint, now in the caller's hands; None if none."""
        with self._lock:
            return self._idle.pop((node_id, endpoint), None)

    def give_back(self, node_id: str, endpoint: Endpoint, client: NodeClient) -> None:
        """Keep ``client`` for the node's next pass; close the least recently used if too many
        (and any other client the node had idle, for an endpoint it has left, say)."""
        closing: list[NodeClient] = []
        with self._lock:
            for key in [k for k in self._idle if k[0] == node_id]:
                old = self._idle.pop(key)
                if old is not client:
                    closing.append(old)
            if self._limit > 0:
                self._idle[(node_id, endpoint)] = client
            else:
                closing.append(client)
            while len(self._idle) > self._limit:
                closing.append(self._idle.popitem(last=False)[1])
        for stale in closing:
            stale.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close every idle client."""
        with self._lock:
            clients, self._idle = list(self._idle.values()), OrderedDict()
        for client in clients:
            client.close()
