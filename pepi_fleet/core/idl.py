"""Loads ``pepi.thrift`` (the repository root's, packaged as data); Thrift types stay here."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

import thriftpy2

IDL_PATH = Path(__file__).with_name("pepi.thrift")


@cache
def load() -> ModuleType:
    """The parsed IDL module (``.CameraServer``, ``.FleetCameraServer``, ``.ImageUnavailable``…)."""
    return thriftpy2.load(str(IDL_PATH), module_name="pepi_thrift")
