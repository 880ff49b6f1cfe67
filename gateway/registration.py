"""Avatar registration, the gateway's side: validate the form, stage the upload in PostgreSQL as a job for the
registration worker, read any job back (whichever gateway took it), announce deletions to the lip-sync caches."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from confluent_kafka import KafkaError, Message, Producer

from infra.audit import AuditActor
from infra.avatar_store import AvatarRecord
from infra.kafka import new_producer
from infra.registration_jobs import JobForm, JobStatus, RegistrationJobStore
from infra.settings import Settings
from schemas.avatar import VoiceChoice
from schemas.avatar_events import AvatarInvalidated
from schemas.registration import RegistrationJobMessage

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1000
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SHARED_USER = "system"  # avatars every user may use (the sample); only the admin registers them
# A finished job answers polls this long; an unfinished one older than this has no worker busy with it (it
# is not counted against REGISTRATION_WORKERS + REGISTRATION_QUEUE).
FINISHED_JOBS_KEPT_S = 900.0
POLL_EVERY_S = 0.05  # a synchronous registration checks its job this often (a PK lookup: cheap)


class RegistrationRefused(Exception):
    """A registration that cannot go ahead, with the HTTP status and JSON body to answer."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, **extra}


@dataclass(frozen=True)
class RegistrationRequest:
    """A validated upload: who it is for, what it is called, and the file's bytes."""

    user_id: str
    name: str
    description: str
    data: bytes
    filename: str | None = None
    default_voice: VoiceChoice = field(default_factory=VoiceChoice)  # checked against the enabled backends


@dataclass(frozen=True)
class StagedJob:
    """A job the gateway accepted: where to poll it."""

    job_id: str
    avatar_id: str


def validate_request(fields: dict[str, str], data: bytes, filename: str | None) -> RegistrationRequest:
    """The form's fields checked and normalised (NFC, trimmed), or RegistrationRefused naming the field."""
    name = _text(fields.get("avatar_name"), "avatar_name", MAX_NAME_CHARS, required=True)
    user_id = (fields.get("user_id") or "").strip()
    if not user_id:
        raise RegistrationRefused(400, "missing_field", "The form field 'user_id' is required.")
    if not USER_ID_PATTERN.match(user_id):
        raise RegistrationRefused(400, "invalid_field", "user_id may hold 1-64 letters, digits and . _ @ - only.")
    description = _text(fields.get("description"), "description", MAX_DESCRIPTION_CHARS, required=False)
    return RegistrationRequest(user_id=user_id, name=name, description=description, data=data, filename=filename)


def _text(value: str | None, field_name: str, max_chars: int, *, required: bool) -> str:
    # Browsers send a textarea's line breaks as CRLF; they are stored as plain LF.
    text = unicodedata.normalize("NFC", value or "").replace("\r\n", "\n").strip()
    if required and not text:
        raise RegistrationRefused(400, "missing_field", f"The form field '{field_name}' is required.")
    if len(text) > max_chars:
        raise RegistrationRefused(400, "invalid_field", f"{field_name} is {len(text)} characters; at most {max_chars}.")
    # Line breaks are fine in a description; other control characters only hide what a name really says.
    allowed = "\n\t" if field_name == "description" else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in text):
        raise RegistrationRefused(400, "invalid_field", f"{field_name} contains control characters.")
    return text


def new_avatar_id() -> str:
    return f"av-{uuid.uuid4().hex[:16]}"


class Registrations:
    """Stages uploads as registration jobs and reads jobs back; the analysis runs in the registration worker."""

    def __init__(self, settings: Settings, jobs: RegistrationJobStore, producer: Producer) -> None:
        self.settings = settings
        self.jobs = jobs
        self.producer = producer

    @classmethod
    def start(cls, settings: Settings, jobs: RegistrationJobStore) -> Registrations:
        return cls(settings, jobs, new_producer(settings))

    def stop(self) -> None:
        self.producer.flush(5)
        self.producer.close()  # its threads go now, not when the broker may already be gone

    def submit(self, request: RegistrationRequest, owner: str | None, actor: AuditActor | None = None) -> StagedJob:
        """Stage the upload and queue its job; refuses (503) when the workers and the queue are full, or when
        the broker does not take the job. ``actor`` is who registers (for the audit entry of the avatar)."""
        pending = self.jobs.unfinished(younger_than_s=FINISHED_JOBS_KEPT_S)
        if pending >= self.settings.registration_workers + self.settings.registration_queue:
            raise RegistrationRefused(503, "registration_busy",
                                      f"{pending} uploads are being analysed; try again in a few seconds.")
        job = StagedJob(job_id=uuid.uuid4().hex, avatar_id=new_avatar_id())
        form = JobForm(user_id=request.user_id, name=request.name, description=request.description,
                       filename=request.filename, default_voice=request.default_voice, actor=actor)
        digest = self.jobs.stage(job.job_id, job.avatar_id, owner, form, request.data)
        message = RegistrationJobMessage(job_id=job.job_id, avatar_id=job.avatar_id, upload_bytes=len(request.data),
                                         upload_sha256=digest, ts_ms=int(time.time() * 1000))
        failure = self._produce(self.settings.kafka_registration_topic, job.job_id, message.to_kafka())
        if failure is not None:
            log.warning("registration job not queued", extra={"avatar_id": job.avatar_id, "error": failure})
            self.jobs.finish_failed(job.job_id, {"code": "broker_unavailable", "report": None,
                                                 "message": "the job could not be queued"})
            raise RegistrationRefused(503, "broker_unavailable", "The upload could not be queued for analysis "
                                                                 "(the message broker is unavailable); try again.")
        return job

    def job(self, job_id: str) -> JobStatus | None:
        return self.jobs.status(job_id, kept_s=FINISHED_JOBS_KEPT_S)

    async def wait(self, job_id: str) -> JobStatus | None:
        """The job once it finished, or as it is after REGISTRATION_WAIT_S.

        A database outage meanwhile does not end the wait: the worker finishes the job once PostgreSQL is back,
        and the poll reads it then (an outage that outlasts the wait is answered as the database being down)."""
        deadline = time.monotonic() + self.settings.registration_wait_s
        while True:
            try:
                status = await asyncio.to_thread(self.job, job_id)
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(POLL_EVERY_S)
                continue
            if status is None or status.finished or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(POLL_EVERY_S)

    def announce_invalidated(self, avatar_id: str, reason: Literal["deleted", "replaced"]) -> bool:
        """Tell every lip-sync worker to drop the avatar; returns whether the broker acknowledged it."""
        event = AvatarInvalidated(avatar_id=avatar_id, reason=reason, ts_ms=int(time.time() * 1000))
        return self._produce(self.settings.kafka_avatar_invalidation_topic, avatar_id, event.to_kafka()) is None

    def _produce(self, topic: str, key: str, value: bytes) -> str | None:
        """Produce and wait for the broker's answer: None once acknowledged, else what went wrong."""
        outcome: list[KafkaError | None] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            outcome.append(error)

        self.producer.produce(topic, value, key=key.encode(), on_delivery=delivered)
        self.producer.flush(5)
        if not outcome:
            return "no acknowledgement within 5 s"
        return None if outcome[0] is None else str(outcome[0])


def name_taken(user_id: str, name: str) -> RegistrationRefused:
    return RegistrationRefused(409, "name_taken",
                               f"User '{user_id}' already has an avatar named '{name}'; choose another name "
                               "or delete that avatar first.")


def avatar_info(record: AvatarRecord) -> dict[str, Any]:
    """An avatar as the API shows it."""
    info = record.to_dict()
    info["preview_url"] = f"/avatar/{record.avatar_id}/preview.jpg"
    return info
