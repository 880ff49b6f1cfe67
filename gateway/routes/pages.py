"""The web player at ``/`` and the files under ``/static/`` (pages, scripts, styles, fonts)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from gateway.routes.process import ErrorBody

router = APIRouter(tags=["pages"])
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Explicit, because the platform's mimetypes table may lack some (woff2) or guess others differently.
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".woff2": "font/woff2", ".txt": "text/plain; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".ico": "image/x-icon",
               ".json": "application/json"}
# Revalidate every time: cheap with the ETag FileResponse sets, and a new deploy is never half-cached.
CACHE_HEADERS = {"Cache-Control": "no-cache"}
NOT_FOUND = {"model": ErrorBody, "description": "no such file (`not_found`)"}


def static_file(relative: str) -> Path:
    """The file under STATIC_DIR that ``relative`` names, refusing anything that would leave it."""
    candidate = (STATIC_DIR / relative).resolve()
    if not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file() or candidate.suffix not in MEDIA_TYPES:
        raise HTTPException(404, detail={"code": "not_found", "message": f"no static file '{relative}'"})
    return candidate


@router.get("/", summary="The web player: pick an avatar, type Persian or English, watch it speak",
            response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
async def player_page() -> FileResponse:
    return FileResponse(static_file("index.html"), media_type=MEDIA_TYPES[".html"], headers=CACHE_HEADERS)


@router.get("/static/{path:path}", summary="Static files of the web pages (scripts, styles, fonts)",
            response_class=FileResponse, responses={404: NOT_FOUND})
async def static(path: str) -> FileResponse:
    found = static_file(path)
    return FileResponse(found, media_type=MEDIA_TYPES[found.suffix], headers=CACHE_HEADERS)
