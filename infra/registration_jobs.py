"""Registration jobs in PostgreSQL: the staged upload (encrypted), the job's progress and its outcome, so the
gateway that took an upload, the worker that analyses it and the gateway a client polls can all be different."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from infra.audit import AuditActor
from infra.crypto import FaceKeyring
from schemas.avatar import VoiceChoice

JobState = Literal["queued", "analysing", "storing", "done", "failed"]
UPLOAD_COLUMN = "staged_upload"  # the encryption's associated data: a staged blob never opens as another column


@dataclass(frozen=True)
class JobForm:
    """What the avatar is to be: the upload form as the gateway validated it, and who sent it."""

    user_id: str
    name: str
    description: str = ""
    filename: str | None = None
    default_voice: VoiceChoice = field(default_factory=VoiceChoice)
    actor: AuditActor | None = None  # None: no audit entry (the sample avatar)


@dataclass(frozen=True)
class JobStatus:
    """A job as a poll sees it."""

    job_id: str
    avatar_id: str
    owner: str | None
    state: JobState
    stage: str
    progress: float
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


@dataclass(frozen=True)
class Attempt:
    """A worker's start on a job: the form, and how many workers (this one included) have started it."""

    job_id: str
    avatar_id: str
    form: JobForm
    attempts: int
    finished: bool  # an earlier attempt finished it: the message is a redelivery, nothing is left to do


# Upper bounds (seconds) of the registration-time histogram: a photo takes about a second, a 30 s video a minute.
REGISTRATION_TIME_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class RegistrationTimes:
    """One outcome's histogram: cumulative job counts at each upper bound (the last is +inf) and the sum."""

    outcome: str
    buckets: tuple[tuple[float, int], ...]
    seconds_sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


_STATUS_COLUMNS = "job_id, avatar_id, owner, state, stage, progress, attempts, result, error"


class RegistrationJobStore:
    """The registration_jobs and registration_uploads tables (migration 0006)."""

    def __init__(self, pool: ConnectionPool, keyring: FaceKeyring) -> None:
        self.pool = pool
        self.keyring = keyring

    def stage(self, job_id: str, avatar_id: str, owner: str | None, form: JobForm, data: bytes) -> str:
        """Store the job and its upload in one transaction; returns the upload's SHA-256 (hex)."""
        digest = hashlib.sha256(data).hexdigest()
        sealed = self.keyring.encrypt(data, column=UPLOAD_COLUMN, avatar_id=avatar_id)
        voice = form.default_voice
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO registration_jobs (job_id, avatar_id, owner, user_id, name, description, filename,"
                " default_tts, default_voice, actor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job_id, avatar_id, owner, form.user_id, form.name, form.description, form.filename, voice.tts,
                 voice.voice, None if form.actor is None else Jsonb(_actor_json(form.actor))))
            conn.execute("INSERT INTO registration_uploads (job_id, key_id, sha256, data) VALUES (%s, %s, %s, %s)",
                         (job_id, self.keyring.current_id, digest, sealed))
        return digest

    def unfinished(self, younger_than_s: float) -> int:
        """Jobs not finished, created in the last ``younger_than_s`` (older ones no worker is busy with)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM registration_jobs WHERE finished_at IS NULL"
                               " AND created_at > now() - make_interval(secs => %s)", (younger_than_s,)).fetchone()
        return int(row[0]) if row else 0

    def status(self, job_id: str, kept_s: float) -> JobStatus | None:
        """The job, unless there is none or it finished more than ``kept_s`` ago."""
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT {_STATUS_COLUMNS} FROM registration_jobs WHERE job_id = %s AND"
                               " (finished_at IS NULL OR finished_at > now() - make_interval(secs => %s))",
                               (job_id, kept_s)).fetchone()
        if row is None:
            return None
        job, avatar_id, owner, state, stage, progress, attempts, result, error = row
        return JobStatus(job, avatar_id, owner, state, stage, float(progress), int(attempts), result, error)

    def start(self, job_id: str) -> Attempt | None:
        """Count a worker's attempt at an unfinished job; None when there is no such job."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE registration_jobs SET attempts = attempts + CASE WHEN finished_at IS NULL THEN 1 ELSE 0 END,"
                " state = CASE WHEN finished_at IS NULL THEN 'analysing' ELSE state END, updated_at = now()"
                " WHERE job_id = %s RETURNING avatar_id, user_id, name, description, filename, default_tts,"
                " default_voice, actor, attempts, finished_at IS NOT NULL", (job_id,)).fetchone()
        if row is None:
            return None
        avatar_id, user_id, name, description, filename, tts, voice, actor, attempts, finished = row
        form = JobForm(user_id, name, description, filename, VoiceChoice.model_validate({"tts": tts, "voice": voice}),
                       None if actor is None else AuditActor(actor["actor"], actor["kind"], actor.get("client_ip")))
        return Attempt(job_id, avatar_id, form, int(attempts), bool(finished))

    def upload(self, job_id: str, avatar_id: str) -> tuple[bytes, str] | None:
        """The staged bytes (decrypted) and their recorded SHA-256; None once the job finished."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT key_id, sha256, data FROM registration_uploads WHERE job_id = %s",
                               (job_id,), binary=True).fetchone()
        if row is None:
            return None
        key_id, digest, sealed = row
        return self.keyring.decrypt(sealed, key_id, column=UPLOAD_COLUMN, avatar_id=avatar_id), str(digest)

    def advance(self, job_id: str, state: JobState, stage: str, progress: float) -> None:
        """Record progress; it never goes back (a retried job's bar waits until the retry passes it)."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE registration_jobs SET state = %s, stage = %s, updated_at = now(),"
                         " progress = GREATEST(progress, %s) WHERE job_id = %s AND finished_at IS NULL",
                         (state, stage, min(max(progress, 0.0), 1.0), job_id))

    @staticmethod
    def finish_done(conn: psycopg.Connection[Any], job_id: str, result: dict[str, Any]) -> None:
        """On ``conn``, inside the transaction that stores the avatar: the job and the avatar commit together,
        so a worker that dies in between leaves neither, and a redelivered job finds the job finished."""
        _finish(conn, job_id, "done", result=result)

    def finish_failed(self, job_id: str, error: dict[str, Any]) -> None:
        with self.pool.connection() as conn, conn.transaction():
            _finish(conn, job_id, "failed", error=error)

    def forget_finished(self, older_than_s: float) -> int:
        """Delete jobs that finished long enough ago that no poll asks for them any more."""
        with self.pool.connection() as conn:
            return conn.execute("DELETE FROM registration_jobs WHERE finished_at < now() - make_interval(secs => %s)",
                                (older_than_s,)).rowcount


def _finish(conn: psycopg.Connection[Any], job_id: str, state: JobState, *, result: dict[str, Any] | None = None,
            error: dict[str, Any] | None = None) -> None:
    # clock_timestamp(), not now(): now() is when the transaction began, which for a done job is before the
    # avatar's frames were written.
    finished = conn.execute(
        "UPDATE registration_jobs SET state = %s, stage = %s, progress = CASE WHEN %s THEN 1 ELSE progress"
        " END, result = %s, error = %s, finished_at = clock_timestamp(), updated_at = clock_timestamp()"
        " WHERE job_id = %s AND finished_at IS NULL"
        " RETURNING extract(epoch FROM finished_at - created_at)::float8",
        (state, state, state == "done", None if result is None else Jsonb(result),
         None if error is None else Jsonb(error), job_id)).fetchone()
    conn.execute("DELETE FROM registration_uploads WHERE job_id = %s", (job_id,))
    if finished is not None:  # counted once: a redelivered job that was already finished updates nothing
        _count_time(conn, state, max(0.0, float(finished[0])))


def _count_time(conn: psycopg.Connection[Any], outcome: str, seconds: float) -> None:
    le = next(bound for bound in (*REGISTRATION_TIME_BUCKETS, math.inf) if seconds <= bound)
    conn.execute("INSERT INTO registration_time_buckets AS b (outcome, le, jobs, seconds) VALUES (%s, %s, 1, %s)"
                 " ON CONFLICT (outcome, le) DO UPDATE SET jobs = b.jobs + 1, seconds = b.seconds + excluded.seconds",
                 (outcome, le, seconds))


def registration_times(pool: ConnectionPool) -> list[RegistrationTimes]:
    """Per outcome, the cumulative histogram of registration times (upload staged -> job finished)."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT outcome, le, jobs, seconds FROM registration_time_buckets").fetchall()
    out = []
    for outcome in ("done", "failed"):
        counts = {float(le): (int(jobs), float(seconds)) for name, le, jobs, seconds in rows if name == outcome}
        running, buckets = 0, []
        for bound in (*REGISTRATION_TIME_BUCKETS, math.inf):
            running += counts.get(bound, (0, 0.0))[0]
            buckets.append((bound, running))
        out.append(RegistrationTimes(outcome, tuple(buckets), sum(seconds for _, seconds in counts.values())))
    return out


def _actor_json(actor: AuditActor) -> dict[str, Any]:
    return {"actor": actor.actor, "kind": actor.kind, "client_ip": actor.client_ip}
