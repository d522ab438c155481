"""Which physical camera took an image: one name per node and camera index."""

from __future__ import annotations


def camera_serial(node_id: str, camera: int) -> str:
    """The camera's serial number: its EXIF BodySerialNumber and its folder in rig exports.

    Unique across the fleet: the index is the digits after the last ``-cam``, the node id
    (unique itself) everything before it.
    """
    return f"{node_id}-cam{camera}"
