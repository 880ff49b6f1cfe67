"""Schema v1 of ``avatar.registrations``: a registration job, a pointer to an upload staged in PostgreSQL."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.common import AvatarId

JobId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class RegistrationJobMessage(BaseModel):
    """Analyse the upload staged under ``job_id`` and register it as ``avatar_id``.

    The upload itself stays in PostgreSQL (up to 50 MiB, more than a Kafka message holds); its size and
    SHA-256 let the worker refuse a staged upload that is not the one the gateway accepted. Key: the job id.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["registration_job"] = "registration_job"
    job_id: JobId
    avatar_id: AvatarId
    upload_bytes: int = Field(ge=1)
    upload_sha256: Sha256Hex
    ts_ms: int

    def to_kafka(self) -> bytes:
        return self.model_dump_json().encode()
