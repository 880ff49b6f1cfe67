"""How a registration job answers over HTTP: the status for each error code the registration worker writes (the
worker knows no HTTP), and the job as a poll shows it."""

from __future__ import annotations

from typing import Any

from infra.registration_jobs import JobStatus

# The codes of the registration worker's refusals (processors/registration/errors.py and core.py) and the
# gateway's own (staging), each with the status every gateway answers it with.
HTTP_STATUS: dict[str, int] = {
    "empty_file": 400,
    "corrupt_file": 400,
    "unsupported_media_type": 415,
    "file_too_large": 413,
    "image_too_large": 413,
    "video_too_long": 413,
    "no_decodable_frames": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "face_lost": 422,
    "face_too_small": 422,
    "too_blurry": 422,
    "extreme_pose": 422,
    "mouth_not_visible": 422,
    "mouth_occluded": 422,
    "too_dark": 422,
    "too_bright": 422,
    "poor_exposure": 422,
    "name_taken": 409,
    "registration_crashed": 422,  # every worker died on this upload: the file, not the service, is the problem
    "upload_mismatch": 500,  # the staged bytes changed between gateway and worker: ours to fix, not the caller's
    "internal_error": 500,
    "broker_unavailable": 503,
}
CREATED = 201


def http_status(code: str) -> int:
    """The status a refusal's code answers with; an unknown code is a bug of ours, so a 500."""
    return HTTP_STATUS.get(code, 500)


def outcome_status(job: JobStatus) -> int | None:
    """The status the finished job answers with (201 or its error's); None while it runs."""
    if job.state == "done":
        return CREATED
    if job.state == "failed":
        return http_status(str((job.error or {}).get("code", "internal_error")))
    return None


def job_view(job: JobStatus, avatar: dict[str, Any] | None) -> dict[str, Any]:
    """A job as ``GET /avatar/register/jobs/{id}`` shows it; ``avatar`` is the stored avatar once it is done."""
    return {"job_id": job.job_id, "avatar_id": job.avatar_id, "state": job.state, "stage": job.stage,
            "progress": round(job.progress, 3), "http_status": outcome_status(job),
            "result": finished_body(job, avatar), "error": job.error}


def finished_body(job: JobStatus, avatar: dict[str, Any] | None) -> dict[str, Any] | None:
    """The 201 body of a done job (as a synchronous registration answers it); None before then."""
    if job.state != "done" or job.result is None:
        return None
    return {"avatar_id": job.avatar_id, "avatar": avatar, **{k: v for k, v in job.result.items() if k != "avatar_id"}}
