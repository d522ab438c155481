"""Node and capture id rules (both become topic levels or file names)."""

from __future__ import annotations

import re

from pepi_fleet.schemas.errors import PayloadError

NODE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
CAPTURE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NODE_ID = re.compile(NODE_ID_PATTERN)
_CAPTURE_ID = re.compile(CAPTURE_ID_PATTERN)


def validate_node_id(value: str) -> str:
    """Return ``value`` if it is a valid node id, else raise PayloadError."""
    return _valid_id(value, "node id")


def _valid_id(value: str, what: str) -> str:
    if not _NODE_ID.fullmatch(value):
        raise PayloadError(
            f"invalid {what} {value[:40]!r}: "
            "use 1-32 of a-z 0-9 _ - starting with a letter or digit"
        )
    return value


def validate_site_id(value: str) -> str:
    """Return ``value`` if it is a valid site id (a topic level and a broker login's suffix):
    the node ids' rule, else raise PayloadError."""
    return _valid_id(value, "site id")


def validate_capture_id(value: str) -> str:
    """Return ``value`` if it is a safe capture id (it becomes a file name), else raise."""
    if not _CAPTURE_ID.fullmatch(value) or value.endswith((".", "..")):
        raise PayloadError(
            f"invalid capture id {value[:70]!r}: use 1-64 of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return value


def is_capture_id(value: str) -> bool:
    """True when ``value`` is a safe capture id."""
    try:
        validate_capture_id(value)
    except PayloadError:
        return False
    return True
