"""Which URL the relay pulls for a camera: the stream its node advertises, if it may be used."""

from __future__ import annotations

from urllib.parse import urlsplit

from pepi_fleet.controller.presence import NodeState, NodeView
from pepi_fleet.controller.preview_relay import PreviewUnavailable, PreviewUnknown


def stream_url(node_id: str, camera: int, view: NodeView | None) -> str:
    """The MJPEG stream URL of ``node_id``'s camera ``camera``.

    PreviewUnknown: no such node or camera (or the node serves no streams);
    PreviewUnavailable: the node is not online, or its URL points at another host than its
    Thrift address (a node may only have the controller fetch from its own address).
    """
    if view is None or view.state is NodeState.REMOVED:
        raise PreviewUnknown(f"no node {node_id!r} is known to this controller: see GET /api/nodes")
    status = view.status
    if status is None:
        raise PreviewUnavailable(f"node {node_id} has sent no status yet")
    count = len(status.cameras)
    if camera >= count:
        raise PreviewUnknown(f"node {node_id} has {count} camera(s): indexes 0-{count - 1}")
    if camera >= len(status.stream_urls):
        raise PreviewUnknown(f"node {node_id} serves no preview stream for camera {camera}")
    if view.state is not NodeState.ONLINE:
        raise PreviewUnavailable(f"node {node_id} is {view.state}")
    url = status.stream_urls[camera]
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != status.thrift.host.strip("[]").lower():
        raise PreviewUnavailable(
            f"node {node_id} advertises the stream {url[:200]!r}, not on its own address "
            f"{status.thrift.host}: the relay does not follow it"
        )
    return url
