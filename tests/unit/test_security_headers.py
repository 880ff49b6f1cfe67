"""Every gateway response carries the security headers; a page keeps its own CSP; the policy allows no remote code."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient

from gateway.docs_pages import DOCS_CSP
from gateway.security_headers import PAGE_CSP, SecurityHeaders, with_security_headers


def small_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/page")
    async def page() -> HTMLResponse:
        return HTMLResponse("<p>hi</p>")

    @app.get("/own")
    async def own() -> HTMLResponse:
        return HTMLResponse("<p>docs</p>", headers={"Content-Security-Policy": "default-src 'none'"})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]), media_type="video/mp4")

    @app.get("/text")
    async def text() -> PlainTextResponse:
        return PlainTextResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"})

    app.add_middleware(SecurityHeaders)
    return app


def test_pages_streams_and_errors_all_get_the_headers() -> None:
    client = TestClient(small_app())
    for path, status in (("/page", 200), ("/stream", 200), ("/missing", 404)):
        response = client.get(path)
        assert response.status_code == status
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"] == PAGE_CSP
    assert client.get("/stream").content == b"ab"


def test_a_response_that_sets_a_header_itself_keeps_it_and_gets_it_once() -> None:
    client = TestClient(small_app())
    own = client.get("/own")
    assert own.headers.get_list("content-security-policy") == ["default-src 'none'"]
    assert client.get("/text").headers.get_list("x-frame-options") == ["SAMEORIGIN"]


def directives(policy: str) -> dict[str, list[str]]:
    parsed = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parsed}


def test_the_policies_forbid_inline_and_remote_scripts_and_framing() -> None:
    for policy in (PAGE_CSP, DOCS_CSP):
        parsed = directives(policy)
        assert parsed["script-src"] == ["'self'"]
        assert parsed["frame-ancestors"] == ["'none'"] and parsed["object-src"] == ["'none'"]
        assert not [source for sources in parsed.values() for source in sources
                    if source.startswith(("http", "*")) or source == "'unsafe-eval'"]
    assert "'unsafe-inline'" not in PAGE_CSP
    assert "blob:" in directives(PAGE_CSP)["media-src"]  # the player's MediaSource


def test_header_names_are_compared_without_case() -> None:
    headers = with_security_headers([(b"Content-Security-Policy", b"x")])
    assert [value for name, value in headers if name.lower() == b"content-security-policy"] == [b"x"]
