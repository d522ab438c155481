"""Clock sync state: cheap after the first call (no ldconfig child on paho's network thread)."""

from __future__ import annotations

import sys
from typing import Any

from pepi_fleet.node.clock_sync import clock_synchronised

_spawned: list[str] = []
_watching = False


def _audit(event: str, _args: tuple[Any, ...]) -> None:
    if _watching and event in ("subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec"):
        _spawned.append(event)


sys.addaudithook(_audit)


def test_clock_synchronised_starts_no_process_after_the_first_call() -> None:
    global _watching
    first = clock_synchronised()
    assert first in (True, False, None)
    _watching = True
    try:
        for _ in range(5):
            assert clock_synchronised() == first
    finally:
        _watching = False
    assert _spawned == []
