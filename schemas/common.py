"""Field types shared by several message schemas (ids that become topic names, languages)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import StringConstraints

# A session id becomes part of a Kafka topic name, so it is held to the topic-name alphabet.
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
AvatarId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Language = Literal["fa", "en"]


def new_id() -> str:
    return uuid.uuid4().hex
