"""Node cards as small diffs: what changed of what the page shows, coalesced per viewer.

A fleet of 1000 nodes heartbeats hundreds of times a second; a page needs none of that but
the fields that changed. ``NodeDiffer`` remembers, per event-stream subscriber, what it last
sent of each node and returns only the fields that differ. A change of nothing but the
ever-moving fields (last heartbeat, measured clock offset) is held back until the node's
last send is ``quiet_s`` old, so a steady fleet costs each viewer a trickle. So is a change
of the cameras' readings that automatic exposure, white balance and focus move by themselves;
a change of what a person set (a mode, a fixed exposure, gain, colour gains or lens position)
goes out at once, so a settings change reaches the page within a flush.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NodeFields = dict[str, Any]

QUIET_FIELDS = frozenset({"last_heartbeat_at", "clock_offset_s", "clock_rtt_s"})
"""Fields that move with every heartbeat or clock probe: sent at most every ``quiet_s``."""
NOT_SENT = frozenset({"heartbeat_age_s"})
"""Derived from ``last_heartbeat_at`` and the viewer's clock: the page computes it."""
DEFAULT_QUIET_S = 15.0


def settled_cameras(cameras: Any) -> Any:
    """What of each camera stays put until someone changes it: the camera with its control
    modes and the values set by hand, without the readings that the camera's automatic
    exposure, white balance, focus and sync move frame by frame."""
    if not isinstance(cameras, list):
        return cameras
    return [_settled_camera(camera) for camera in cameras]


def _settled_camera(camera: Any) -> Any:
    if not isinstance(camera, dict):
        return camera
    settled = dict(camera)
    controls = camera.get("controls")
    if isinstance(controls, dict):
        kept = {k: controls.get(k) for k in ("auto_exposure", "auto_white_balance", "af_mode")}
        if controls.get("auto_exposure") is False:
            kept["exposure_time_us"] = controls.get("exposure_time_us")
            kept["analogue_gain"] = controls.get("analogue_gain")
        if controls.get("auto_white_balance") is False:
            kept["colour_gains"] = controls.get("colour_gains")
        if controls.get("af_mode") == "manual":
            kept["lens_position"] = controls.get("lens_position")
        settled["controls"] = kept
    sync = camera.get("sync")
    if isinstance(sync, dict):
        settled["sync"] = {k: v for k, v in sync.items() if k != "timer_us"}
    return settled


SETTLED_PARTS: dict[str, Callable[[Any], Any]] = {"cameras": settled_cameras}
"""Fields whose change is quiet unless what the function keeps of them changes."""


class NodeDiffer:
    """Per-viewer memory of the node fields sent, and the nodes marked changed since."""

    def __init__(self, quiet_s: float = DEFAULT_QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._sent: dict[str, NodeFields] = {}
        self._sent_at: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._held: dict[str, float] = {}  # node -> when its quiet changes may go out

    def mark(self, node_id: str) -> None:
        """The node may have changed (a heartbeat, a presence change)."""
        self._dirty.add(node_id)

    @property
    def pending(self) -> bool:
        """Whether a ``flush`` may have something to send (now or once a node's quiet
        period ends)."""
        return bool(self._dirty or self._held)

    def flush(
        self, lookup: Callable[[str], NodeFields | None], now: float
    ) -> tuple[list[NodeFields], list[str]]:
        """The changed fields of every marked node (each with its ``node_id``) and the ids of
        marked nodes ``lookup`` no longer knows. A node whose only changes are quiet ones and
        was sent less than ``quiet_s`` ago is held, and looked up again only when marked
        again or when its quiet period ends."""
        changed: list[NodeFields] = []
        removed: list[str] = []
        due = {n for n, at in self._held.items() if at <= now}
        # a held node is looked at again when marked (maybe urgent news) or when due
        for node_id in sorted(self._dirty | due):
            self._held.pop(node_id, None)
            fields = lookup(node_id)
            if fields is None:
                removed.append(node_id)  # the page may know it from its snapshot
                self._sent.pop(node_id, None)
                self._sent_at.pop(node_id, None)
                continue
            diff, urgent = self._diff(node_id, fields)
            if not diff:
                continue
            if not urgent and now - self._sent_at[node_id] < self.quiet_s:
                self._held[node_id] = self._sent_at[node_id] + self.quiet_s
                continue
            self._sent.setdefault(node_id, {}).update(diff)
            self._sent_at[node_id] = now
            changed.append({"node_id": node_id, **diff})
        self._dirty = set()
        return changed, removed

    def _diff(self, node_id: str, fields: NodeFields) -> tuple[NodeFields, bool]:
        """The fields that differ from what was sent, and whether they must go out now:
        anything but a quiet field, a quiet field that appears (None -> a value), or a
        settled part (``SETTLED_PARTS``) of a field that changed."""
        before = self._sent.get(node_id)
        shown = {k: v for k, v in fields.items() if k not in NOT_SENT and k != "node_id"}
        if before is None:
            return shown, True
        diff = {k: v for k, v in shown.items() if k not in before or before[k] != v}
        urgent = any(_urgent(k, before.get(k), v) for k, v in diff.items())
        return diff, urgent


def _urgent(key: str, before: Any, after: Any) -> bool:
    if before is None:
        return True
    if key in QUIET_FIELDS:
        return False
    settle = SETTLED_PARTS.get(key)
    return settle is None or settle(before) != settle(after)
