"""The node's secret for the fleet extension of its Thrift server (retained, controller-only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SECRET_PATTERN = r"^[A-Za-z0-9_-]{32,128}$"


class NodeSecret(BaseModel):
    """``nodes/<id>/secret``: the token every call of the node's Thrift extension
    (list, get, fetch, release) must carry. Published retained by the node; the broker's
    ACL lets only the controller read it, so a host that can reach the node's Thrift port
    but holds no controller login cannot list, download or delete its captures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str = Field(pattern=SECRET_PATTERN, description="random, URL-safe base64")
