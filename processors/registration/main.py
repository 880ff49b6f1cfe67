"""The registration worker service: ``avatar.registrations`` jobs → avatars in PostgreSQL, with progress.

Run as ``python -m processors.registration.main``; each process analyses one upload at a time (face analysis
is CPU-bound), and more processes share the jobs as one consumer group (``avatar-registration``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import psycopg

from infra.audit import AVATAR_REGISTERED, AuditEntry
from infra.avatar_store import AvatarNameTaken, AvatarStore
from infra.crypto import face_keyring
from infra.database import ensure_database, open_pool, retry_while_unavailable
from infra.logging import configure_logging, log_scope
from infra.migrations import migrate
from infra.registration_jobs import Attempt, RegistrationJobStore
from infra.settings import Settings, get_settings
from processors.common.kafka_app import Inbound, InvalidMessage, KafkaApp, Outgoing, parse_message, run_until_stopped
from processors.common.priority import lower_thread_priority
from processors.registration import core
from processors.registration.analyse import RegistrationLimits, default_analyser
from processors.registration.faces import FaceAnalyser
from processors.registration.insightface import InsightFaceAnalyser
from processors.registration.sample import ensure_sample_avatar
from schemas.idle_clip import IdleClipRequest
from schemas.registration import RegistrationJobMessage

log = logging.getLogger(__name__)
FINISHED_JOBS_KEPT_S = 900.0  # a finished job answers polls this long (the gateway reads it with the same bound)
PROGRESS_EVERY_S = 0.2  # progress rows written at most this often; a stage change is written at once
# A job's writes are retried this long while PostgreSQL is away (a restart, a failover); past it the worker
# exits with the job's offset uncommitted, so another worker (or this one, restarted) does the job again.
DATABASE_RETRY_S = 600.0
# After a progress write failed (the database is away), the analysis goes on without progress this long.
PROGRESS_PAUSE_S = 2.0


def create_analyser(settings: Settings) -> FaceAnalyser:
    """The configured face backend, loaded now; a missing or invalid model is a start-up error (dlib: the
    process-wide analyser the sample avatar also uses)."""
    if settings.face_backend == "insightface":
        assert settings.insightface_model_dir is not None  # Settings validates this
        return InsightFaceAnalyser.from_pack(settings.insightface_model_dir)
    return default_analyser()


def registration_limits(settings: Settings) -> RegistrationLimits:
    return RegistrationLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.registration_max_pixels,
                              max_frames=settings.registration_max_frames,
                              max_duration_s=settings.registration_max_duration_s)


def parse_job(value: bytes) -> RegistrationJobMessage:
    return parse_message(RegistrationJobMessage, value, "avatar.registrations v1")


class ProgressWriter:
    """Writes a job's progress to PostgreSQL, throttled, and keeps the worker's heartbeat going meanwhile."""

    def __init__(self, jobs: RegistrationJobStore, job_id: str, app: KafkaApp) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.app = app
        self._last: tuple[str, float] = ("", 0.0)  # stage, when written
        self._paused_until = 0.0  # no progress writes before this (the database was away)

    def __call__(self, state: core.ProgressState, stage: str, fraction: float) -> None:
        self.app.keep_alive()
        now = time.monotonic()
        last_stage, last_at = self._last
        if (stage == last_stage and now - last_at < PROGRESS_EVERY_S) or now < self._paused_until:
            return
        self._last = (stage, now)
        try:
            self.jobs.advance(self.job_id, state, stage, fraction)
        except psycopg.OperationalError:
            # Progress is for the progress bar only: the analysis goes on, and the job's end is retried.
            self._paused_until = time.monotonic() + PROGRESS_PAUSE_S


class RegistrationWorker:
    """Kafka adapter around the registration core: reads the staged upload, stores the avatar, finishes the job."""

    def __init__(self, settings: Settings, jobs: RegistrationJobStore, store: AvatarStore,
                 analyser: FaceAnalyser) -> None:
        self.settings = settings
        self.jobs = jobs
        self.store = store
        self.analyser = analyser
        self.limits = registration_limits(settings)
        self.app = KafkaApp(settings, name="registration", input_topic=settings.kafka_registration_topic,
                            handler=self.handle, engine=analyser.name, background=True)

    def handle(self, message: Inbound) -> Iterator[Outgoing]:
        """One job, start to end, idempotently: a redelivered job that finished is left alone, one that did not
        (its worker died) starts again from the staged upload, and the avatar commits with the job's end.

        Its database writes wait for PostgreSQL while it is away (``DATABASE_RETRY_S``): the handler does not
        return meanwhile, so the job's offset is not committed before the job is finished."""
        job = parse_job(message.value)
        with log_scope(job_id=job.job_id, avatar_id=job.avatar_id):
            attempt = self._retried("start the job", lambda: self.jobs.start(job.job_id))
            if attempt is None or attempt.avatar_id != job.avatar_id:
                raise InvalidMessage(f"no registration job '{job.job_id}' for avatar '{job.avatar_id}' is staged")
            if attempt.finished:
                log.info("registration job already finished; redelivery ignored")
                return
            if attempt.attempts > 1:  # a worker died on it (``recovering`` alone also marks start-up's backlog)
                log.warning("registration job started again", extra={"attempts": attempt.attempts})
            try:
                registered = self._run(job, attempt)
            except InvalidMessage:
                raise
            except psycopg.OperationalError as error:  # away for longer than the retries: leave the job unfinished
                raise SystemExit(f"registration worker: PostgreSQL unavailable for {DATABASE_RETRY_S:.0f} s "
                                 f"({error}); job '{job.job_id}' is left to the next worker") from None
            except Exception:
                # The poll must end; the app then dead-letters the job with the exception as the reason.
                self._fail(job.job_id, core.internal_error())
                raise
            self._retried("forget finished jobs", lambda: self.jobs.forget_finished(FINISHED_JOBS_KEPT_S))
        if registered:  # the lip-sync workers render its idle clip now, not when a player first asks
            request = IdleClipRequest(avatar_id=job.avatar_id, reason="registered", ts_ms=int(time.time() * 1000))
            yield Outgoing(self.settings.kafka_idle_clip_topic, job.avatar_id.encode(), request.to_kafka())

    def _retried[T](self, what: str, operation: Callable[[], T]) -> T:
        return retry_while_unavailable(operation, what=what, give_up_after_s=DATABASE_RETRY_S,
                                       while_waiting=self.app.keep_alive)

    def _run(self, job: RegistrationJobMessage, attempt: Attempt) -> bool:
        """Whether the avatar was stored."""
        refused = core.check_attempts(attempt.attempts)
        if refused is not None:
            self._fail(job.job_id, refused)
            raise InvalidMessage(f"registration job started {attempt.attempts} times; every worker died on it")
        staged = self._retried("read the staged upload", lambda: self.jobs.upload(job.job_id, job.avatar_id))
        if staged is None:
            self._fail(job.job_id, core.internal_error())
            raise InvalidMessage(f"registration job '{job.job_id}' has no staged upload")
        data, digest = staged
        refused = core.check_upload(data, digest, expected_bytes=job.upload_bytes, expected_sha256=job.upload_sha256)
        if refused is not None:
            self._fail(job.job_id, refused)
            raise InvalidMessage(f"staged upload of job '{job.job_id}' does not match the job message")
        outcome = core.register(attempt.form, data, avatar_id=job.avatar_id, analyser=self.analyser,
                                limits=self.limits, progress=ProgressWriter(self.jobs, job.job_id, self.app))
        if isinstance(outcome, core.Refused):
            self._fail(job.job_id, outcome)
            return False
        return self._store(job.job_id, attempt, outcome, data)

    def _store(self, job_id: str, attempt: Attempt, outcome: core.Registered, data: bytes) -> bool:
        """Whether this attempt stored the avatar (one transaction with the job's end, retried while the
        database is away: a commit whose answer was lost shows up as the avatar already stored)."""
        form, result = attempt.form, outcome.result
        audit = None if form.actor is None else AuditEntry(
            AVATAR_REGISTERED, form.actor, avatar_id=attempt.avatar_id, subject_user_id=form.user_id,
            details=core.audit_details(form, result, len(data)))
        try:
            self._retried("store the avatar", lambda: self.store.save(
                result.face_data, user_id=form.user_id, name=form.name, description=form.description,
                media_kind=result.media_kind, source=data, source_width=result.source_width,
                source_height=result.source_height, quality_report=result.report.to_dict(),
                default_voice=form.default_voice, audit=audit,
                also=lambda conn: RegistrationJobStore.finish_done(conn, job_id, outcome.summary)))
        except AvatarNameTaken as taken:
            self._fail(job_id, core.name_taken(taken.user_id, taken.name))
            return False
        except psycopg.errors.UniqueViolation as error:
            if error.diag.constraint_name != "avatars_pkey":
                raise
            # Another attempt at this job (a worker presumed dead that was only slow, or this one's commit whose
            # answer the outage lost) stored it and finished the job in the same transaction: nothing is doubled.
            log.warning("avatar already stored by another attempt of this job")
            return False
        log.info("avatar registered", extra={"frames": result.frame_count, "attempts": attempt.attempts,
                                             "analysis_ms": round(result.analysis_ms, 1)})
        return True

    def _fail(self, job_id: str, refused: core.Refused) -> None:
        self._retried("record the refusal", lambda: self.jobs.finish_failed(job_id, refused.error))
        log.info("registration refused", extra={"code": refused.error["code"]})


def create(settings: Settings) -> RegistrationWorker:
    """The worker with its face backend loaded, the database migrated and the sample avatar registered."""
    analyser = create_analyser(settings)  # first: a bad model pack stops start-up before anything is opened
    ensure_database(settings.database_url)
    migrate(settings.database_url)
    keyring = face_keyring(settings)
    pool = open_pool(settings.database_url, 2, name="registration",
                     acquire_timeout_s=settings.database_acquire_timeout_s)
    store = AvatarStore(pool, keyring)
    if settings.register_sample_avatar:
        ensure_sample_avatar(store, settings.sample_avatar_id)
    worker = RegistrationWorker(settings, RegistrationJobStore(pool, keyring), store, analyser)
    worker.app.admin.ensure_pipeline_topics()
    return worker


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="registration")
    # Before any thread starts, so all of them inherit it: an upload's analysis takes a core for seconds, and the
    # live chunks of the lip-sync and the gateway on the same machine must not wait for it (a 720p video's
    # registration raised a session's first chunk by 40% at normal priority).
    lower_thread_priority()
    worker = create(settings)
    log.info("registration worker running", extra={"detector": worker.analyser.name})
    try:
        run_until_stopped(worker.app)
    finally:
        worker.store.pool.close()


if __name__ == "__main__":
    main()
