"""Schema v1 of ``avatar.control``: instructions every processor instance hears at once (interrupts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import RequestId, SessionId


class Interrupt(BaseModel):
    """Stop the named requests of a session (all that were accepted before ``ts_ms`` when none are named)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["interrupt"] = "interrupt"
    session_id: SessionId
    request_ids: list[RequestId] = Field(default_factory=list)
    ts_ms: int

    def to_kafka(self) -> bytes:
        return self.model_dump_json().encode()
