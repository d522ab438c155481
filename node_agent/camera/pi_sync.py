"""libcamera software camera sync: which role each camera takes and how in sync it is.

One camera in the rig is the sync *server*: libcamera multicasts its frame timing (UDP to
239.255.255.250:10000 by default, one network segment) and every *client* shifts its frame
starts onto the server's. Both raise ``SyncReady`` on the frame from which they agree to be
in sync; ``SyncTimer`` counts µs to that moment. Only servers send; nothing goes back.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pepi_fleet.schemas.camera import CameraSync, SyncMode

logger = logging.getLogger(__name__)

SYNC_GROUP = "239.255.255.250"
SYNC_PORT = 10000
"""libcamera's default sync multicast group and port (``rpi.sync`` in the tuning file)."""
SYNC_MODE_VALUES: dict[SyncMode, int] = {"off": 0, "server": 1, "client": 2}
"""libcamera's rpi::SyncModeEnum values (control_ids_rpi.yaml)."""
AUTO_LISTEN_S = 3.0
"""How long ``--sync-role auto`` listens for a server before becoming one. The server
multicasts every 30 frames, i.e. every second at 30 fps."""

SyncRole = Literal["server", "client", "auto", "elected"]
"""``elected``: start as a client and follow the controller's election (``<root>/sync/server``)."""
NO_SYNC_DETAIL = (
    "this node's libcamera has no SyncMode control (software camera sync came with libcamera "
    "0.4.0+rpt20250127 and picamera2 0.3.25): run 'sudo apt full-upgrade'; frames are not "
    "frame-locked"
)


def sync_server_heard(window_s: float, group: str = SYNC_GROUP, port: int = SYNC_PORT) -> bool:
    """Whether a libcamera sync server multicasts on ``group``:``port`` within ``window_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            if ipaddress.ip_address(group).is_multicast:
                any_interface = socket.inet_aton("0.0.0.0")
                membership = struct.pack("4s4s", socket.inet_aton(group), any_interface)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            logger.warning("cannot listen for a camera sync server on %s:%d: %s", group, port, exc)
            return False
        sock.settimeout(window_s)
        try:
            sock.recvfrom(2048)
        except TimeoutError:
            return False
        except OSError as exc:
            logger.warning("listening for a camera sync server failed: %s", exc)
            return False
        return True


def resolve_role(role: SyncRole, heard: Callable[[float], bool]) -> Literal["server", "client"]:
    """``server``/``client`` as configured; ``auto``: client if a server is heard, else server;
    ``elected``: client until the controller elects this node.

    ``auto`` is for small rigs and benches: nodes that start within the same few seconds can
    all hear silence and all become servers. Name one server in a fixed rig.
    """
    if role == "elected":
        return "client"
    if role != "auto":
        return role
    if heard(AUTO_LISTEN_S):
        logger.info("camera sync: a server is already running; this node is a client")
        return "client"
    logger.info("camera sync: no server heard for %.0f s; this node is the server", AUTO_LISTEN_S)
    return "server"


def camera_modes(node_role: Literal["server", "client"], count: int) -> list[SyncMode]:
    """Each camera's sync mode: a server node's first camera serves, every other is a client."""
    return ["server" if node_role == "server" and i == 0 else "client" for i in range(count)]


class SyncTracker:
    """One camera's sync state, updated from each frame's metadata (owner thread only)."""

    def __init__(self, mode: SyncMode, detail: str | None = None) -> None:
        self.mode: SyncMode = mode
        self.detail = detail
        self._ready: bool | None = None
        self._timer_us: int | None = None
        self._lag_us: int | None = None

    @property
    def enabled(self) -> bool:
        return self.mode in ("server", "client")

    def reset(self) -> None:
        """The camera restarted: sync starts over."""
        self._ready = self._timer_us = self._lag_us = None

    def update(self, metadata: Mapping[str, Any]) -> bool | None:
        """Record a frame; whether it was taken in sync (None when sync is not in use)."""
        if not self.enabled:
            return None
        ready = bool(metadata.get("SyncReady", False))
        timer = metadata.get("SyncTimer")
        self._timer_us = int(timer) if isinstance(timer, (int, float)) else None
        if ready and not self._ready:
            self._lag_us = self._timer_us
        self._ready = ready
        return ready

    def status(self) -> CameraSync:
        return CameraSync(
            mode=self.mode,
            ready=self._ready,
            timer_us=self._timer_us,
            lag_us=self._lag_us,
            detail=self.detail,
        )
