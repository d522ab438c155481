"""Install the fake ``picamera2`` (tests/support/fake_picamera2) for one test."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

FAKE_PICAMERA2_DIR = Path(__file__).parent / "fake_picamera2"
T = TypeVar("T")


def install_fake_picamera2(monkeypatch: pytest.MonkeyPatch, **rig: Any) -> ModuleType:
    """Make ``import picamera2`` find the fake for this test; ``rig`` says what is attached."""
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2_DIR))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    module = importlib.import_module("picamera2")
    assert Path(module.__file__ or "").is_relative_to(FAKE_PICAMERA2_DIR), module
    monkeypatch.setitem(sys.modules, "picamera2", module)  # removed again after the test
    module.install_rig(**rig)
    return module


def eventually(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "it") -> T:
    """Poll observable state until ``probe`` returns a truthy value (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
