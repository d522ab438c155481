"""The payloads of the retained availability topics (node and controller), and the Last Will."""

from __future__ import annotations

ONLINE = b"online"
OFFLINE = b"offline"
