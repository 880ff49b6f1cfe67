"""Schema v1 of ``avatar.invalidations``: an avatar every lip-sync worker must drop from its memory."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.common import AvatarId


class AvatarInvalidated(BaseModel):
    """The avatar's cached face data is gone (deleted) or outdated: forget it, reload on the next use."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["avatar_invalidated"] = "avatar_invalidated"
    avatar_id: AvatarId
    reason: Literal["deleted", "replaced"]
    ts_ms: int

    def to_kafka(self) -> bytes:
        return self.model_dump_json().encode()
