"""Schema v1 of ``avatar.idle-clips``: an avatar whose idle clip a lip-sync worker should render, if it has not."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.common import AvatarId


class IdleClipRequest(BaseModel):
    """Render ``avatar_id``'s idle clip for its current version, unless the worker's engine already has one.

    Sent by the registration worker when an avatar is stored and by a gateway asked for a clip it cannot find;
    every engine's worker group hears it once. Key: the avatar id.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["idle_clip_request"] = "idle_clip_request"
    avatar_id: AvatarId
    reason: Literal["registered", "missing"]
    ts_ms: int

    def to_kafka(self) -> bytes:
        return self.model_dump_json().encode()
