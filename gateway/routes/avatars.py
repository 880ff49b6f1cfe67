"""Avatar HTTP API: register (streamed upload, sync or polled job), list, info, preview, default voice, delete,
cache status, and the registration page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from gateway.auth import Principal
from gateway.deps import Caller, Running
from gateway.registration import (
    SHARED_USER,
    RegistrationRefused,
    Registrations,
    avatar_info,
    name_taken,
    validate_request,
)
from gateway.registration_status import finished_body, http_status, job_view, outcome_status
from gateway.routes.audit import audit_actor
from gateway.services import Services
from gateway.upload import UploadError, read_upload
from gateway.voice import VoiceRefused, changed_default, check_listed, default_for_avatar, parse_voice_choice
from infra.audit import AVATAR_DELETE_REFUSED, AVATAR_DELETED, AVATAR_VOICE_CHANGED, AuditEntry, AuditLog
from infra.avatar_store import AvatarNotFound, AvatarRecord
from infra.media_end import without_trailing_bytes
from infra.media_kind import SNIFF_BYTES, UnsupportedMedia, sniff_media_kind
from infra.registration_jobs import JobStatus, RegistrationJobStore
from schemas.avatar import FaceFrame, VoiceChoice
from schemas.status import VoiceEntry

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_FILES = {"registration.js": "text/javascript", "registration.css": "text/css"}
_TEXT_FIELDS = frozenset({"avatar_name", "user_id", "description", "tts", "voice"})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Registration jobs on the gateway's database pool, after Services started (the analysis is the worker's)."""
    running: Services = app.state.services
    jobs = RegistrationJobStore(running.store.pool, running.store.keyring)
    registrations = await asyncio.to_thread(Registrations.start, running.settings, jobs)
    app.state.registrations = registrations
    try:
        yield
    finally:
        await asyncio.to_thread(registrations.stop)


router = APIRouter(tags=["avatars"], lifespan=lifespan)


async def registrations(request: Request) -> Registrations:
    found: Registrations = request.app.state.registrations
    return found


Registry = Annotated[Registrations, Depends(registrations)]


def error(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message})


def not_found(avatar_id: str) -> HTTPException:
    return error(404, "unknown_avatar", f"No avatar with id '{avatar_id}'.")


def refusal_response(refused: RegistrationRefused) -> JSONResponse:
    return JSONResponse(refused.body, status_code=refused.status)


def media_bytes(data: bytes) -> bytes:
    """An upload up to the end its format declares: a ZIP or script appended to a valid image or video is never
    stored."""
    if not data:
        return data
    kept = without_trailing_bytes(data, sniff_media_kind(data[:SNIFF_BYTES]))
    if len(kept) < len(data):
        log.info("bytes after the file's own end dropped", extra={"dropped_bytes": len(data) - len(kept)})
    return kept


def _sniff_or_refuse(head: bytes) -> None:
    sniff_media_kind(head)  # raises UnsupportedMedia (unsupported_media_type / empty_file)


async def stored_avatar(job: JobStatus, running: Services) -> dict[str, Any] | None:
    """The avatar a done job registered, as the API shows it (None if it was deleted since)."""
    if job.state != "done":
        return None
    try:
        return avatar_info(await asyncio.to_thread(running.store.record, job.avatar_id))
    except AvatarNotFound:
        return None


@router.post("/avatar/register", status_code=201, summary="Register an avatar from a photo, GIF or video",
             responses={202: {"description": "with ?async=true: the job to poll"}})
async def register(request: Request, who: Caller, running: Running, registry: Registry,
                   respond_async: Annotated[bool, Query(alias="async")] = False) -> JSONResponse:
    """Multipart fields ``file``, ``avatar_name``, ``user_id``, optional ``description``, and optional ``tts`` and
    ``voice``: the avatar's default voice (a backend enabled here; a voice alone is TTS_ENGINE's).

    The upload is read in chunks and refused as soon as it breaks a limit. Answers 201 with the avatar
    and its quality report, or (``?async=true``) 202 with a job to poll at ``/avatar/register/jobs/{id}``.
    """
    try:
        upload = await read_upload(request, max_file_bytes=running.settings.max_upload_bytes,
                                   text_fields=_TEXT_FIELDS, on_file_head=_sniff_or_refuse, head_bytes=SNIFF_BYTES)
        if not upload.has_file:
            raise RegistrationRefused(400, "missing_field", "The form field 'file' (the photo or video) is required.")
        form = validate_request(upload.fields, media_bytes(bytes(upload.file)), upload.filename)
        form = replace(form, default_voice=default_for_avatar(parse_voice_choice(upload.fields), running.settings))
        check_listed(form.default_voice, listed_voices(running))
        _check_may_register(who, form.user_id)
        if await asyncio.to_thread(running.store.name_taken, form.user_id, form.name):
            raise name_taken(form.user_id, form.name)
        if not form.data:
            raise RegistrationRefused(400, "empty_file", "The uploaded file is empty (0 bytes).")
        staged = await asyncio.to_thread(registry.submit, form, who.user_id, audit_actor(who, request))
    except UploadError as refused:
        return JSONResponse({"code": refused.code, "message": refused.message}, status_code=refused.status)
    except UnsupportedMedia as refused:
        return JSONResponse({"code": refused.code, "message": refused.message}, status_code=http_status(refused.code))
    except RegistrationRefused as refused:
        return refusal_response(refused)
    except VoiceRefused as refused:
        return JSONResponse({"code": refused.code, "message": refused.message}, status_code=400)
    status_url = f"/avatar/register/jobs/{staged.job_id}"
    job = await (asyncio.to_thread(registry.job, staged.job_id) if respond_async else registry.wait(staged.job_id))
    if job is None:  # removed meanwhile (only by hand): nothing to show but where it was
        return JSONResponse({"code": "job_not_found", "message": "the registration job is gone"}, status_code=500)
    if respond_async:
        return JSONResponse({**job_view(job, None), "status_url": status_url}, status_code=202)
    if not job.finished:
        waited = running.settings.registration_wait_s
        return JSONResponse({"code": "registration_pending", "status_url": status_url, "job_id": job.job_id,
                             "message": f"the upload is still being analysed after {waited:.0f} s; poll status_url "
                                        "for the outcome"}, status_code=504)
    body = finished_body(job, await stored_avatar(job, running)) or job.error
    return JSONResponse(body, status_code=outcome_status(job) or 500)


def _check_may_register(who: Principal, user_id: str) -> None:
    if who.is_admin:
        return
    if user_id != who.user_id:
        raise RegistrationRefused(403, "forbidden", "A user token registers avatars for its own user_id only.")


@router.get("/avatar/register/jobs/{job_id}", summary="Progress of a registration started with ?async=true")
async def registration_job(job_id: str, who: Caller, running: Running, registry: Registry) -> dict[str, Any]:
    """Any gateway answers for any job: progress and outcome are in PostgreSQL."""
    job = await asyncio.to_thread(registry.job, job_id)
    if job is None or not (who.is_admin or job.owner == who.user_id):
        raise error(404, "job_not_found", f"No registration job '{job_id[:64]}' (finished jobs are kept 15 minutes).")
    return job_view(job, await stored_avatar(job, running))


@router.get("/avatar/list", summary="Avatars the caller may use, optionally of one user")
async def list_avatars(who: Caller, running: Running,
                       user_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    if who.is_admin:
        owners = None if user_id is None else [user_id]
    else:
        visible = {who.user_id or "", SHARED_USER}
        if user_id is not None and user_id not in visible:
            raise error(403, "forbidden", "A user token lists only its own and the shared 'system' avatars.")
        owners = sorted(visible if user_id is None else {user_id})
    records = await asyncio.to_thread(running.store.list, owners)
    return {"avatars": [avatar_info(record) for record in records], "count": len(records)}


@router.get("/avatar/cache/status", summary="The lip-sync workers' avatar caches: hit rate, entries, bytes")
async def cache_status(_who: Caller, running: Running) -> dict[str, Any]:
    workers = [s for s in running.status.live("lipsync") if s.avatar_cache is not None]
    instances = [{"instance": s.instance, **s.avatar_cache.model_dump()} for s in workers if s.avatar_cache]
    hits = sum(i["hits"] for i in instances)
    misses = sum(i["misses"] for i in instances)
    return {
        "workers": len(instances),
        "entries": sum(i["entries"] for i in instances),
        "bytes": sum(i["bytes"] for i in instances),
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "invalidations": sum(i["invalidations"] for i in instances),
        "instances": instances,
    }


def listed_voices(running: Services) -> list[VoiceEntry]:
    """Every voice the live TTS processors announce in their heartbeats."""
    return [entry for status in running.status.live("tts") for entry in status.voices]


@router.get("/avatar/voices", summary="The voices a request or an avatar may name, as the TTS processors announce them")
async def voices(_who: Caller, running: Running, tts: str | None = None, language: str | None = None) -> dict[str, Any]:
    """Every live TTS processor's voices (its heartbeats carry them), each (backend, voice) once; optionally of
    one backend (`tts`) or one language (`language`: fa, en). A request names one with `tts` and `voice`."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    processors = running.status.live("tts")
    for entry in listed_voices(running):
        seen.setdefault((entry.tts, entry.voice), entry.model_dump())
    listed = [entry for entry in seen.values() if (tts is None or entry["tts"] == tts)
              and (language is None or language in entry["languages"])]
    return {"voices": listed, "count": len(listed), "tts_processors": len(processors)}


async def visible_record(avatar_id: str, who: Principal, running: Services) -> AvatarRecord:
    """The avatar if the caller may use it; 404 alike for a missing avatar and another user's."""
    try:
        record = await asyncio.to_thread(running.store.record, avatar_id)
    except AvatarNotFound:
        raise not_found(avatar_id) from None
    if not who.may_use(record.user_id):
        raise not_found(avatar_id)  # another user's avatar: its existence is not revealed
    return record


@router.get("/avatar/{avatar_id}/info", summary="One avatar with its quality report")
async def avatar_details(avatar_id: str, who: Caller, running: Running) -> dict[str, Any]:
    return avatar_info(await visible_record(avatar_id, who, running))


@router.get("/avatar/{avatar_id}/preview.jpg", summary="The first frame with the detected face box and landmarks",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def avatar_preview(avatar_id: str, who: Caller, running: Running) -> Response:
    await visible_record(avatar_id, who, running)
    try:
        frame = await asyncio.to_thread(running.store.first_frame, avatar_id)
    except AvatarNotFound:
        raise not_found(avatar_id) from None
    jpeg = await asyncio.to_thread(preview_jpeg, frame)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def preview_jpeg(frame: FaceFrame) -> bytes:
    """The frame with its box (green) and 68 landmarks (yellow; the mouth red), line widths scaled to the face."""
    bgr = cv2.cvtColor(np.asarray(frame.image), cv2.COLOR_RGB2BGR)
    x0, y0, x1, y1 = frame.box
    width = max(1, round(max(x1 - x0, y1 - y0) / 80))
    cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (60, 200, 60), width, cv2.LINE_AA)
    for index, (x, y) in enumerate(frame.landmarks):
        colour = (40, 40, 230) if index >= 48 else (40, 220, 240)
        cv2.circle(bgr, (round(float(x)), round(float(y))), width + 1, colour, -1, cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("preview encoding failed")
    return bytes(jpeg.tobytes())


@router.patch("/avatar/{avatar_id}", summary="Change an avatar's default voice (its owner or the admin)")
async def change_default_voice(avatar_id: str, change: VoiceChoice, who: Caller, running: Running,
                               request: Request) -> dict[str, Any]:
    """Body ``{"tts": ..., "voice": ...}``: the fields given replace the default (null clears one); a new backend
    without a voice drops the old voice. Requests that name their own backend or voice still win.
    """
    record = await visible_record(avatar_id, who, running)
    if not who.may_manage(record.user_id):
        raise error(403, "forbidden", "An avatar's default voice is changed by its owner or the admin only "
                                      "(the shared 'system' avatars: the admin).")
    try:
        voice = default_for_avatar(changed_default(record.default_voice, change), running.settings)
        check_listed(voice, listed_voices(running))
    except VoiceRefused as refused:
        raise error(400, refused.code, refused.message) from None
    audit = AuditEntry(AVATAR_VOICE_CHANGED, audit_actor(who, request), avatar_id=avatar_id,
                       subject_user_id=record.user_id, details={
                           "from": record.default_voice.model_dump(), "to": voice.model_dump()})
    try:
        changed = await asyncio.to_thread(running.store.set_default_voice, avatar_id, voice, audit)
    except AvatarNotFound:
        raise not_found(avatar_id) from None
    return avatar_info(changed)


@router.delete("/avatar/{avatar_id}", summary="Delete an avatar and its cached face data everywhere",
               responses={403: {"description": "a shared avatar and a user token (`forbidden`), or the bundled sample "
                                               "and dev mode's tokenless caller (`sample_protected`)"}})
async def delete_avatar(avatar_id: str, who: Caller, running: Running, registry: Registry,
                        request: Request) -> dict[str, Any]:
    record = await visible_record(avatar_id, who, running)
    if not who.may_manage(record.user_id):
        raise error(403, "forbidden", "The shared 'system' avatars are deleted with the admin token only.")
    if avatar_id == running.settings.sample_avatar_id and who.anonymous:
        await refuse_sample_deletion(record, who, request, running)
    audit = AuditEntry(AVATAR_DELETED, audit_actor(who, request), avatar_id=avatar_id,
                       subject_user_id=record.user_id, details={"name": record.name})
    try:
        await asyncio.to_thread(running.store.delete, avatar_id, audit)
    except AvatarNotFound:
        raise not_found(avatar_id) from None
    notified = await asyncio.to_thread(registry.announce_invalidated, avatar_id, "deleted")
    return {"avatar_id": avatar_id, "deleted": True, "caches_notified": notified}


async def refuse_sample_deletion(record: AvatarRecord, who: Principal, request: Request, running: Services) -> None:
    """Dev mode's anonymous admin may not delete the bundled sample (the player opens it first); the attempt is
    audited as refused, so the log never shows a deletion that did not happen."""
    audit = AuditEntry(AVATAR_DELETE_REFUSED, audit_actor(who, request), avatar_id=record.avatar_id,
                       subject_user_id=record.user_id, details={"name": record.name, "code": "sample_protected"})
    await asyncio.to_thread(AuditLog(running.store.pool).write, audit)
    raise error(403, "sample_protected", f"'{record.avatar_id}' is the bundled sample avatar: in dev mode only "
                                         "a caller sending ADMIN_TOKEN may delete it.")


@router.get("/avatar-registration", include_in_schema=False)
async def registration_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "registration.html", media_type="text/html; charset=utf-8")


@router.get("/avatar-registration/{asset}", include_in_schema=False)
async def registration_asset(asset: str) -> FileResponse:
    media_type = PAGE_FILES.get(asset)
    if media_type is None:  # a fixed list: the path parameter never reaches the file system
        raise error(404, "not_found", "No such file.")
    return FileResponse(STATIC_DIR / asset, media_type=f"{media_type}; charset=utf-8")
