"""``GET /avatar/{avatar_id}/idle.mp4``: the avatar's idle loop, which players show between utterances."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from gateway.deps import Caller, Running
from gateway.idle_clips import IDLE_CLIP_PATH, IdleClips, serving_engine
from gateway.routes.avatars import visible_record
from gateway.routes.process import ErrorBody
from gateway.services import Services
from infra.idle_clip_store import WORKER_SERVICE_PREFIX, IdleClipStore, avatar_version
from infra.kafka import new_producer

MEDIA_TYPE = "video/mp4"
# Revalidated on every use: the URL stays the same across re-registrations, the ETag names the version,
# and a match is answered 304 without touching the clip.
CACHE_CONTROL = "private, no-cache"
# A clip renders in about a second on a lip-sync worker that is not busy: a player asks again after this.
RETRY_AFTER_S = 2
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One clip cache per gateway over PostgreSQL, and a producer to ask the workers for a missing clip."""
    running: Services = app.state.services
    settings = running.settings
    app.state.idle_clips = clips = IdleClips(IdleClipStore(running.store.pool, running.store.keyring),
                                             new_producer(settings), topic=settings.kafka_idle_clip_topic)
    yield
    clips.close()


router = APIRouter(tags=["avatars"], lifespan=lifespan)


async def idle_clips(request: Request) -> IdleClips:
    found: IdleClips = request.app.state.idle_clips
    return found


Clips = Annotated[IdleClips, Depends(idle_clips)]


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_TYPE: {}}, "description": "the clip (206 for a Range request)"},
    304: {"description": "the clip under the `If-None-Match` ETag is still current"},
    404: {"model": ErrorBody, "description": "no such avatar, or another user's (`unknown_avatar`)"},
    503: {"model": ErrorBody, "description": "the clip is being rendered by a lip-sync worker "
                                             "(`idle_clip_pending`): ask again after `Retry-After` seconds"},
}


@router.get(IDLE_CLIP_PATH, summary="The avatar's idle loop (mouth closed, a few seconds) as MP4",
            response_class=Response, responses=RESPONSES)
async def idle_clip(avatar_id: str, request: Request, who: Caller, running: Running, clips: Clips) -> Response:
    """Rendered by a lip-sync worker with the configured engine (``LIPSYNC_ENGINE``; if no worker of it runs but
    another engine's do, theirs) once per avatar version, stored in PostgreSQL, served from there (and this
    gateway's memory). Until it is rendered: 503 ``idle_clip_pending`` with ``Retry-After``; show the
    avatar's still meanwhile.

    Loop it muted between utterances: its first and last frames join without a jump. The same ownership
    rules as ``/avatar/{id}/info`` apply.
    """
    record = await visible_record(avatar_id, who, running)
    version = avatar_version(record)
    engine = serving_engine(running.settings.lipsync_engine, rendering_engines(running))
    clip = clips.cached(avatar_id, version, engine) or await asyncio.to_thread(clips.find, avatar_id, version, engine)
    if clip is None:
        return pending(avatar_id)
    headers = {"ETag": clip.etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if clip.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return _ranged(clip.data, request.headers.get("range"), headers)


def rendering_engines(running: Services) -> set[str]:
    """The engines whose lip-sync workers render idle clips now (their heartbeats)."""
    return {status.engine for status in running.status.all_live()
            if status.service.startswith(WORKER_SERVICE_PREFIX) and status.engine}


def pending(avatar_id: str) -> JSONResponse:
    return JSONResponse({"code": "idle_clip_pending",
                         "message": f"the idle clip of avatar '{avatar_id}' is being rendered; "
                                    f"ask again in {RETRY_AFTER_S} s"},
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"})


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _ranged(data: bytes, range_header: str | None, headers: dict[str, str]) -> Response:
    """The whole clip, or the one byte range asked for (a ``<video>`` pointed straight at the URL seeks
    with ranges); several ranges get the whole clip, which RFC 9110 allows."""
    match = _SINGLE_RANGE.fullmatch(range_header.strip()) if range_header else None
    if match is None or match.groups() == ("", ""):
        return Response(data, media_type=MEDIA_TYPE, headers=headers)
    first, last = match.groups()
    size = len(data)
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:  # "bytes=-N": the last N bytes
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return Response(data[start : end + 1], status_code=206, media_type=MEDIA_TYPE,
                    headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
