"""The real mosquitto_pub command, as users run it."""

from __future__ import annotations

import subprocess


def mosquitto_pub(
    port: int,
    topic: str,
    message: str | None,
    *extra: str,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Publish with QoS 1 (``-n`` for an empty message when ``message`` is None)."""
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", *extra]
    cmd += ["-n"] if message is None else ["-m", message]
    if username:
        cmd += ["-u", username, "-P", password or ""]
    subprocess.run(cmd, check=True, timeout=10, capture_output=True)
