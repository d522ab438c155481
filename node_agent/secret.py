"""The node's Thrift extension secret: a random token kept in its data dir (mode 0600).

The node publishes it retained on ``nodes/<id>/secret``, which the broker's ACL lets only
the controller read; the extension's calls (list, get, fetch, release) must carry it.
It survives restarts so the controller's copy stays valid; delete the file to change it.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from pepi_fleet.core.atomic import write_atomic
from pepi_fleet.schemas.secret import SECRET_PATTERN

logger = logging.getLogger(__name__)

SECRET_FILE = "thrift-secret"
_SECRET = re.compile(SECRET_PATTERN)


def load_or_create_secret(data_dir: Path) -> str:
    """The secret in ``<data_dir>/thrift-secret``; a new one if the file is absent or unusable."""
    path = data_dir / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        text = ""
    if _SECRET.fullmatch(text):
        path.chmod(0o600)
        return text
    if path.exists():
        logger.warning("%s is not a usable secret: writing a new one", path)
    secret = secrets.token_urlsafe(32)
    write_atomic(path, secret.encode("ascii") + b"\n", mode=0o600)
    return secret
