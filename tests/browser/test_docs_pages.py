"""/docs (Swagger UI) and /redoc (ReDoc) render the API in headless Chromium with no request leaving the machine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Route

from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings
from tests.browser.polling import poll
from tests.gateway_server import serve_gateway

pytestmark = [pytest.mark.integration, pytest.mark.browser]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, database_url: str) -> Iterator[str]:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        register_sample_avatar=False, _env_file=None)
    with serve_gateway(settings) as url:
        yield url


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Every URL that reached the network (a request the page's CSP refuses never does; one that would leave the
    machine is aborted and kept), and every console error other than the CSP refusing an off-machine URL."""
    reached: list[str] = []
    errors: list[str] = []

    def on_route(route: Route) -> None:
        reached.append(route.request.url)
        if off_machine([route.request.url]):
            route.abort()
        else:
            route.continue_()

    def on_console(message: ConsoleMessage) -> None:
        # ReDoc's bundle always shows Redocly's logo from its CDN (no option turns it off): the page's CSP
        # refuses it, ReDoc hides the broken image, and Chromium logs the refusal. That refusal is the CSP
        # working; any other error fails the test.
        refused_off_machine = "Content Security Policy" in message.text and off_machine(
            re.findall(r"'(https?://[^']+)'", message.text))
        if message.type == "error" and not refused_off_machine:
            errors.append(message.text)

    page.route("**/*", on_route)
    page.on("console", on_console)
    return reached, errors


def off_machine(urls: list[str]) -> list[str]:
    """The URLs that would leave localhost (data: and blob: URLs never do)."""
    return [url for url in urls if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).hostname not in LOCAL_HOSTS]


def test_swagger_ui_lists_the_routes_from_local_files(strict_page: Page, gateway: str) -> None:
    page = strict_page  # a user's browser keeps the docs pages' policy, which refuses ReDoc's CDN logo
    requested, errors = watch(page)
    page.goto(f"{gateway}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert "/avatar/register" in [p.replace("\u200b", "") for p in paths]
    assert "/health" in [p.replace("\u200b", "") for p in paths]
    assert not off_machine(requested), f"requests left the machine: {off_machine(requested)}"
    assert any(url.endswith("/docs-assets/swagger-ui-bundle.js") for url in requested)
    assert not errors, f"console errors (CSP refusals among them): {errors}"


def test_redoc_renders_the_api_from_local_files(strict_page: Page, gateway: str) -> None:
    page = strict_page  # a user's browser keeps the docs pages' policy, which refuses ReDoc's CDN logo
    requested, errors = watch(page)
    page.goto(f"{gateway}/redoc")
    page.wait_for_selector(".api-content h1", timeout=30_000)
    assert "Avatar streaming service" in page.inner_text(".api-content h1")
    poll(page, "() => document.querySelector('.api-content').innerText.includes('/avatar/register')", 20)
    assert not off_machine(requested), f"requests left the machine: {off_machine(requested)}"
    assert any(url.endswith("/docs-assets/redoc.standalone.js") for url in requested)
    assert not errors, f"console errors (CSP refusals among them): {errors}"


def test_docs_assets_are_served_and_nothing_else_is(gateway: str) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png", "swagger-init.js"):
        response = httpx.get(f"{gateway}/docs-assets/{name}")
        assert response.status_code == 200 and len(response.content) > 100, name
    assert httpx.get(f"{gateway}/docs-assets/..%2Fcore.py").status_code == 404
    html = httpx.get(f"{gateway}/docs").text + httpx.get(f"{gateway}/redoc").text
    assert "cdn." not in html and "googleapis" not in html and "<script>" not in html
