"""How the controller talks to one node's store: a small Protocol, free of any wire types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pepi_fleet.schemas import PepiError
from pepi_fleet.schemas.capture import CaptureResult, Frame

Endpoint = tuple[str, int]
"""Where a node serves its captures (host, port), from its status."""


class RetrievalError(PepiError):
    """A node could not be reached or did not deliver what it owes."""


class NodeUnreachable(RetrievalError):
    """The connection to the node failed or broke: later calls of this pass would fail too."""


class AccessRefused(NodeUnreachable):
    """The node refused the controller's secret (none received from it yet, or a stale one):
    later calls of this pass would be refused too."""


class NotHeld(RetrievalError):
    """The node holds no such capture or image (any more)."""


Sink = Callable[[memoryview], object]
"""Takes each piece of an image as it arrives (the piece is only valid during the call)."""


@dataclass(frozen=True)
class ReceivedImage:
    """One image as the node served it: what arrived, and what the node reports for it."""

    size: int
    """Bytes received (each passed to the sink)."""
    sha256: str
    """Of the bytes received, hashed while they arrived."""
    reported_sha256: str
    """What the node reports for the image (taken when it stored it)."""
    frame: Frame | None
    """The node's description of the frame; None if it sent none that can be read."""


class NodeClient(Protocol):
    """One node's stored captures, as the controller sees them.

    Every call raises ``NodeUnreachable`` when the node cannot be reached; a client
    reconnects on the next call. ``close()`` lets go of any connection.
    """

    def list_captures(self) -> list[CaptureResult]:
        """Every capture the node holds, oldest first, as the ok results it published."""
        ...

    def get_capture(self, capture_id: str) -> CaptureResult | None:
        """The capture held under ``capture_id``, or None if the node holds none."""
        ...

    def receive_image(
        self, capture_id: str, camera: int, fmt: str, sink: Sink, max_bytes: int
    ) -> ReceivedImage:
        """One image of a held capture, passed to ``sink`` piece by piece as it arrives.

        ``NotHeld`` if the node does not have it; ``RetrievalError`` (nothing received) if
        the node announces more than ``max_bytes``; ``NodeUnreachable`` if the transfer
        breaks off. An error of ``sink`` propagates (and the connection is closed)."""
        ...

    def release(self, capture_id: str) -> bool:
        """Delete the capture on the node; False if it held none under that id."""
        ...

    def release_matching(self, capture_id: str, expected: dict[int, str]) -> str | None:
        """Delete, in one step on the node, the capture held as ``capture_id`` if its images
        have exactly the ``expected`` checksums (camera -> sha256), else the one holding the
        first of them (ours renamed aside by a re-capture); the id deleted, or None."""
        ...

    def close(self) -> None:
        """Let go of the connection (a later call reconnects)."""
        ...


NodeClientFactory = Callable[[str, Endpoint], NodeClient]
"""Builds the client of a node (its id, its endpoint); the controller's default is Thrift."""
