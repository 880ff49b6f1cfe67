"""Swagger UI at /docs and ReDoc at /redoc, served from the fastapi-offline wheel's files: no CDN, works offline."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

# The wheel ships Swagger UI's bundle and stylesheet, ReDoc's standalone bundle and a favicon; FastAPI's own
# pages point at a CDN, which leaves /docs and /redoc blank on a machine without internet.
ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
               "redoc.standalone.js": "text/javascript; charset=utf-8", "favicon.png": "image/png"}
ASSET_PREFIX = "/docs-assets"

# Swagger UI is started from a script file rather than inline, so the pages need no 'unsafe-inline' script.
SWAGGER_INIT = """window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""

# What the two pages need, and nothing more: their own scripts; inline styles (ReDoc's styled-components and
# Swagger UI write <style> elements); data: images (Swagger UI's icons); blob: workers (ReDoc's search index).
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}


def missing_assets() -> list[str]:
    """The asset files the installed fastapi-offline lacks (a different version could rename them)."""
    return [name for name in ASSET_TYPES if not (ASSET_DIR / name).is_file()]


def swagger_page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{ASSET_PREFIX}/favicon.png">
<link rel="stylesheet" href="{ASSET_PREFIX}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSET_PREFIX}/swagger-ui-bundle.js"></script>
<script src="{ASSET_PREFIX}/swagger-init.js"></script></body></html>
"""


def redoc_page(title: str) -> str:
    # A <redoc> element is started by the bundle itself when it loads: no inline script.
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="{ASSET_PREFIX}/favicon.png"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="{ASSET_PREFIX}/redoc.standalone.js"></script></body></html>
"""


def install_offline_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets; the app must be created with docs_url=None and redoc_url=None."""
    missing = missing_assets()
    if missing:  # fail at start-up rather than serve a blank page
        raise RuntimeError(f"fastapi-offline lacks {', '.join(missing)} under {ASSET_DIR}: reinstall it "
                           "(pyproject pins the version whose files these are)")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_page(app.title), headers=DOCS_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(redoc_page(app.title), headers=DOCS_HEADERS)

    @app.get(f"{ASSET_PREFIX}/swagger-init.js", include_in_schema=False)
    async def swagger_init() -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript; charset=utf-8", headers=DOCS_HEADERS)

    @app.get(ASSET_PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSET_TYPES:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no docs asset '{name}'"})
        return FileResponse(ASSET_DIR / name, media_type=ASSET_TYPES[name], headers=DOCS_HEADERS)
