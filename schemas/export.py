"""Write the JSON Schema of every payload so clients in other languages can validate."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from pepi_fleet.schemas.capture import CaptureCommand, CaptureResult
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.controller import CaptureSetSummary
from pepi_fleet.schemas.exposure import MeterReading, MeterRequest
from pepi_fleet.schemas.secret import NodeSecret
from pepi_fleet.schemas.status import NodeSettings, NodeStatus
from pepi_fleet.schemas.sync import SyncServer

PAYLOAD_MODELS: tuple[type[BaseModel], ...] = (
    CaptureCommand,
    CaptureResult,
    NodeStatus,
    NodeSettings,
    ClockPing,
    ClockPong,
    CaptureSetSummary,
    NodeSecret,
    MeterRequest,
    MeterReading,
    SyncServer,
)


def write_json_schemas(out_dir: Path) -> list[Path]:
    """Write ``<Model>.schema.json`` for each payload model; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model in PAYLOAD_MODELS:
        path = out_dir / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        written.append(path)
    return written
