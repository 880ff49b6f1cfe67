"""Registration's pure core: a job's form and staged upload in, the avatar to store or the refusal to record
out (no Kafka, no PostgreSQL: the adapter in main.py does both)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from infra.registration_jobs import JobForm
from processors.registration.analyse import RegistrationLimits, RegistrationResult, analyse_upload
from processors.registration.errors import RegistrationError
from processors.registration.faces import FaceAnalyser

# Share of the progress bar the analysis takes; storing the frames takes the rest.
ANALYSIS_SHARE = 0.95
# A job every worker died on this many times (killed mid-analysis, out of memory) is refused, not retried again.
MAX_ATTEMPTS = 3

ProgressState = Literal["analysing", "storing"]
Progress = Callable[[ProgressState, str, float], None]  # state, stage, 0..1 of the whole bar


@dataclass(frozen=True)
class Registered:
    """The upload became face data; ``summary`` is what the job reports (the gateway adds the avatar's record)."""

    result: RegistrationResult
    summary: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    """The upload cannot become an avatar: ``error`` holds the code (the gateway maps it), message and report."""

    error: dict[str, Any]


def register(form: JobForm, data: bytes, *, avatar_id: str, analyser: FaceAnalyser, limits: RegistrationLimits,
             progress: Progress) -> Registered | Refused:
    """Analyse the upload; a refusal is an outcome, not an exception."""
    progress("analysing", "decode", 0.0)
    try:
        result = analyse_upload(data, avatar_id=avatar_id, analyser=analyser, limits=limits,
                                progress=lambda fraction, stage: progress("analysing", stage,
                                                                          fraction * ANALYSIS_SHARE),
                                filename=form.filename)
    except RegistrationError as error:
        return Refused(refusal(error))
    progress("storing", "store", ANALYSIS_SHARE)
    return Registered(result, summary(result))


def check_attempts(attempts: int) -> Refused | None:
    """A job started more often than MAX_ATTEMPTS killed every worker that took it: stop feeding it to them."""
    if attempts <= MAX_ATTEMPTS:
        return None
    return Refused({"code": "registration_crashed", "report": None,
                    "message": f"Every worker that analysed this upload stopped before finishing ({MAX_ATTEMPTS} "
                               "attempts); it is not tried again. Try a smaller or different file."})


def check_upload(data: bytes, sha256_hex: str, *, expected_bytes: int, expected_sha256: str) -> Refused | None:
    """The staged bytes must be those the gateway accepted (the job message names their size and digest)."""
    if len(data) == expected_bytes and sha256_hex == expected_sha256:
        return None
    return Refused({"code": "upload_mismatch", "report": None,
                    "message": "The staged upload is not the file that was accepted; upload it again."})


def refusal(error: RegistrationError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message,
            "report": error.report.to_dict() if error.report is not None else None}


def name_taken(user_id: str, name: str) -> Refused:
    return Refused({"code": "name_taken", "report": None,
                    "message": f"User '{user_id}' already has an avatar named '{name}'; choose another name "
                               "or delete that avatar first."})


def internal_error() -> Refused:
    return Refused({"code": "internal_error", "report": None, "message": "the registration failed; it is logged"})


def summary(result: RegistrationResult) -> dict[str, Any]:
    return {
        "avatar_id": result.face_data.avatar_id,
        "report": result.report.to_dict(),
        "warnings": list(result.report.warnings),
        "analysis": {"detector": result.detector, "media_kind": result.media_kind,
                     "frames": result.frame_count, "stride": result.stride,
                     "frames_dropped": result.frames_dropped, "source_fps": result.source_fps,
                     "analysis_ms": round(result.analysis_ms, 1)},
    }


def audit_details(form: JobForm, result: RegistrationResult, upload_bytes: int) -> dict[str, Any]:
    """What the audit log keeps of a registration (never face data)."""
    return {"name": form.name, "media_kind": result.media_kind, "frames": result.frame_count,
            "upload_bytes": upload_bytes, **form.default_voice.model_dump(exclude_none=True)}
