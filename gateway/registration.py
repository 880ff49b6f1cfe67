"""Avatar registration glue: analyse an upload off the event loop with progress, store it, announce deletions."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import unicodedata
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Producer

from infra.audit import AVATAR_REGISTERED, AuditActor, AuditEntry
from infra.avatar_store import AvatarNameTaken, AvatarRecord, AvatarStore
from infra.kafka import new_producer
from infra.settings import Settings
from processors.registration import (
    DlibFaceAnalyser,
    FaceAnalyser,
    RegistrationError,
    RegistrationLimits,
    analyse_upload,
)
from processors.registration.analyse import default_analyser
from processors.registration.insightface import InsightFaceAnalyser
from schemas.avatar import VoiceChoice
from schemas.avatar_events import AvatarInvalidated

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1000
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SHARED_USER = "system"  # avatars every user may use (the sample); only the admin registers them
FINISHED_JOBS_KEPT_S = 900.0
# Share of the progress bar the analysis takes; storing the frames takes the rest.
_ANALYSIS_SHARE = 0.95

JobState = Literal["queued", "analysing", "storing", "done", "failed"]


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


@dataclass
class RegistrationJob:
    """One upload's way through analysis and storage, readable at any time by a polling client."""

    job_id: str
    avatar_id: str
    owner: str | None  # the principal's user id (None: the admin), who may poll it
    state: JobState = "queued"
    stage: str = "queued"
    progress: float = 0.0
    http_status: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def advance(self, state: JobState, stage: str, progress: float) -> None:
        with self._lock:
            self.state, self.stage, self.progress = state, stage, max(self.progress, progress)

    def complete(self, http_status: int, *, result: dict[str, Any] | None = None,
                 error: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.state = "done" if error is None else "failed"
            self.stage = "done" if error is None else "failed"
            self.progress = 1.0 if error is None else self.progress
            self.http_status, self.result, self.error = http_status, result, error
            self.finished = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"job_id": self.job_id, "avatar_id": self.avatar_id, "state": self.state, "stage": self.stage,
                    "progress": round(self.progress, 3), "http_status": self.http_status, "result": self.result,
                    "error": self.error}


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


def create_analyser(settings: Settings, *, shared: bool = True) -> FaceAnalyser:
    """The configured face backend, loaded now; a missing or invalid model is a start-up error.

    ``shared`` dlib is the process-wide analyser the sample avatar also uses; extra workers get their own.
    """
    if settings.face_backend == "insightface":
        assert settings.insightface_model_dir is not None  # Settings validates this
        return InsightFaceAnalyser.from_pack(settings.insightface_model_dir)
    return default_analyser() if shared else DlibFaceAnalyser()


def registration_limits(settings: Settings) -> RegistrationLimits:
    return RegistrationLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.registration_max_pixels,
                              max_frames=settings.registration_max_frames,
                              max_duration_s=settings.registration_max_duration_s)


def new_avatar_id() -> str:
    return f"av-{uuid.uuid4().hex[:16]}"


class Registrar:
    """Runs registrations on a small worker pool (face analysis is CPU-bound) and keeps their jobs."""

    def __init__(self, settings: Settings, store: AvatarStore, analyser: FaceAnalyser, producer: Producer) -> None:
        self.settings = settings
        self.store = store
        self.limits = registration_limits(settings)
        self.producer = producer
        # One analyser per worker thread: dlib's models are not documented as safe to share between threads.
        self._analysers: queue.SimpleQueue[FaceAnalyser] = queue.SimpleQueue()
        self._analysers.put(analyser)
        self._executor = ThreadPoolExecutor(settings.registration_workers, thread_name_prefix="registration")
        self._jobs: dict[str, RegistrationJob] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def start(cls, settings: Settings, store: AvatarStore) -> Registrar:
        analyser = create_analyser(settings)
        return cls(settings, store, analyser, new_producer(settings))

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.producer.flush(5)

    def submit(self, request: RegistrationRequest, owner: str | None,
               actor: AuditActor | None = None) -> RegistrationJob:
        """Queue the analysis; refuses (503) when the workers and the queue are full.

        ``actor`` is who registers (for the audit log entry stored with the avatar).
        """
        job = RegistrationJob(job_id=uuid.uuid4().hex, avatar_id=new_avatar_id(), owner=owner)
        with self._lock:
            self._forget_old_jobs()
            pending = sum(1 for j in self._jobs.values() if j.finished is None)
            if pending >= self.settings.registration_workers + self.settings.registration_queue:
                raise RegistrationRefused(503, "registration_busy",
                                          f"{pending} uploads are being analysed; try again in a few seconds.")
            self._jobs[job.job_id] = job
            self._futures[job.job_id] = self._executor.submit(self._run, job, request, actor)
        return job

    def future(self, job: RegistrationJob) -> Future[None]:
        return self._futures[job.job_id]

    def job(self, job_id: str) -> RegistrationJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def announce_invalidated(self, avatar_id: str, reason: Literal["deleted", "replaced"]) -> bool:
        """Tell every lip-sync worker to drop the avatar; returns whether the broker acknowledged it."""
        event = AvatarInvalidated(avatar_id=avatar_id, reason=reason, ts_ms=int(time.time() * 1000))
        self.producer.produce(self.settings.kafka_avatar_invalidation_topic, event.to_kafka(),
                              key=avatar_id.encode())
        return self.producer.flush(5) == 0

    def _run(self, job: RegistrationJob, request: RegistrationRequest, actor: AuditActor | None) -> None:
        analyser = self._take_analyser()
        try:
            job.complete(201, result=self._register(job, request, analyser, actor))
        except RegistrationError as error:
            report = error.report.to_dict() if error.report is not None else None
            job.complete(error.http_status, error={"code": error.code, "message": error.message, "report": report})
        except AvatarNameTaken as error:
            job.complete(409, error=name_taken(error.user_id, error.name).body)
        except Exception:
            log.exception("registration failed", extra={"avatar_id": job.avatar_id})
            job.complete(500, error={"code": "internal_error", "message": "the registration failed; it is logged"})
        finally:
            self._analysers.put(analyser)

    def _register(self, job: RegistrationJob, request: RegistrationRequest, analyser: FaceAnalyser,
                  actor: AuditActor | None) -> dict[str, Any]:
        job.advance("analysing", "decode", 0.0)
        result = analyse_upload(
            request.data, avatar_id=job.avatar_id, analyser=analyser, limits=self.limits,
            progress=lambda fraction, stage: job.advance("analysing", stage, fraction * _ANALYSIS_SHARE),
            filename=request.filename,
        )
        job.advance("storing", "store", _ANALYSIS_SHARE)
        record = self.store.save(
            result.face_data, user_id=request.user_id, name=request.name, description=request.description,
            media_kind=result.media_kind, source=request.data, source_width=result.source_width,
            source_height=result.source_height, quality_report=result.report.to_dict(),
            default_voice=request.default_voice, audit=None if actor is None else AuditEntry(
                AVATAR_REGISTERED, actor, avatar_id=job.avatar_id, subject_user_id=request.user_id,
                details={"name": request.name, "media_kind": result.media_kind, "frames": result.frame_count,
                         "upload_bytes": len(request.data),
                         **request.default_voice.model_dump(exclude_none=True)}),
        )
        log.info("avatar registered", extra={"avatar_id": job.avatar_id, "frames": result.frame_count,
                                             "analysis_ms": round(result.analysis_ms, 1)})
        return {
            "avatar_id": record.avatar_id,
            "avatar": avatar_info(record),
            "report": result.report.to_dict(),
            "warnings": list(result.report.warnings),
            "analysis": {"detector": result.detector, "media_kind": result.media_kind,
                         "frames": result.frame_count, "stride": result.stride,
                         "frames_dropped": result.frames_dropped, "source_fps": result.source_fps,
                         "analysis_ms": round(result.analysis_ms, 1)},
        }

    def _take_analyser(self) -> FaceAnalyser:
        try:
            return self._analysers.get_nowait()
        except queue.Empty:
            # Only reachable with several workers: each extra worker loads its own models once.
            return create_analyser(self.settings, shared=False)

    def _forget_old_jobs(self) -> None:
        cutoff = time.monotonic() - FINISHED_JOBS_KEPT_S
        for job_id in [j.job_id for j in self._jobs.values() if j.finished is not None and j.finished < cutoff]:
            del self._jobs[job_id]
            self._futures.pop(job_id, None)


def name_taken(user_id: str, name: str) -> RegistrationRefused:
    return RegistrationRefused(409, "name_taken",
                               f"User '{user_id}' already has an avatar named '{name}'; choose another name "
                               "or delete that avatar first.")


def avatar_info(record: AvatarRecord) -> dict[str, Any]:
    """An avatar as the API shows it."""
    info = record.to_dict()
    info["preview_url"] = f"/avatar/{record.avatar_id}/preview.jpg"
    return info
