"""NTP-style clock probe payloads (``clock/ping`` → ``clock/pong``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClockPing(BaseModel):
    """Sent by the controller; ``t1`` is its send time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=0, lt=2**63)
    t1: float = Field(allow_inf_nan=False)


class ClockPong(BaseModel):
    """The node's answer: ``t2`` receipt and ``t3`` send time on the node's clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=0)
    t1: float
    t2: float
    t3: float
