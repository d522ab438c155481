"""Which node leads the rig's libcamera camera sync, as the controller elects it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pepi_fleet.schemas.ids import validate_node_id


class SyncServer(BaseModel):
    """Retained on ``<root>/sync/server``: the node whose first camera is the sync server.

    Nodes started with ``--sync-role elected`` follow it: that node serves, every other is a
    client. ``node_id`` null: no node is elected (every elected-role node is a client)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    node_id: Annotated[str, AfterValidator(validate_node_id)] | None
    elected_at: float = Field(description="controller clock, Unix s")
