"""``GET /avatar/{avatar_id}/idle.mp4``: the avatar's idle loop, which players show between utterances."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from gateway.deps import Caller, Running
from gateway.idle_clips import IDLE_CLIP_PATH, IdleClips, avatar_version, store_renderer
from gateway.routes.avatars import not_found, visible_record
from gateway.routes.process import ErrorBody
from gateway.services import Services
from infra.avatar_store import AvatarNotFound

MEDIA_TYPE = "video/mp4"
# Revalidated on every use: the URL stays the same across re-registrations, the ETag names the version,
# and a match is answered 304 without touching the clip.
CACHE_CONTROL = "private, no-cache"
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One clip cache per gateway, rendering from the same store the other routes read."""
    running: Services = app.state.services
    app.state.idle_clips = clips = IdleClips(store_renderer(running.store, running.settings.video_crf))
    yield
    clips.close()


router = APIRouter(tags=["avatars"], lifespan=lifespan)


def idle_clips(request: Request) -> IdleClips:
    found: IdleClips = request.app.state.idle_clips
    return found


Clips = Annotated[IdleClips, Depends(idle_clips)]


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_TYPE: {}}, "description": "the clip (206 for a Range request)"},
    304: {"description": "the clip under the `If-None-Match` ETag is still current"},
    404: {"model": ErrorBody, "description": "no such avatar, or another user's (`unknown_avatar`)"},
}


@router.get(IDLE_CLIP_PATH, summary="The avatar's idle loop (mouth closed, a few seconds) as MP4",
            response_class=Response, responses=RESPONSES)
async def idle_clip(avatar_id: str, request: Request, who: Caller, running: Running, clips: Clips) -> Response:
    """Rendered on the first request for each version of the avatar, then served from memory.

    Loop it muted between utterances: its first and last frames join without a jump. The same ownership
    rules as ``/avatar/{id}/info`` apply.
    """
    record = await visible_record(avatar_id, who, running)
    version = avatar_version(record)
    headers = {"ETag": f'"idle-{version}"', "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if headers["ETag"] in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    try:
        clip = await clips.get(avatar_id, version)
    except AvatarNotFound:  # deleted between the lookup and the rendering
        raise not_found(avatar_id) from None
    return _ranged(clip.data, request.headers.get("range"), headers)


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
