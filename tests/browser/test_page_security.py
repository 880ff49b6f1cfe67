"""The player and registration pages load under their Content-Security-Policy in Chromium with nothing refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from playwright.sync_api import ConsoleMessage, Page
from skimage import data

from gateway.security_headers import PAGE_CSP
from infra.broker import EmbeddedBroker, free_port
from infra.settings import Settings
from tests import gateway_server
from tests.browser.polling import poll
from tests.browser.test_registration_page import DROP_FILE
from tests.unit.test_registration_media import png_bytes, resized

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, database_url: str, registration_worker: None) -> Iterator[str]:
    """A gateway alone; the registration worker registers the sample avatar the player opens."""
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                        _env_file=None)
    with gateway_server.serve_gateway(settings) as url:
        yield url


def refusals(page: Page) -> list[str]:
    found: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            found.append(message.text)

    page.on("console", on_console)
    return found


@pytest.mark.parametrize("path", ["/", "/avatar-registration"])
def test_pages_send_the_headers(gateway: str, path: str) -> None:
    response = httpx.get(gateway + path)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_player_connects_and_loads_its_fonts_under_the_policy(strict_page: Page, gateway: str) -> None:
    refused = refusals(strict_page)
    strict_page.goto(gateway + "/")
    poll(strict_page, "() => window.avatarPlayer && window.avatarPlayer.connection.sessionId !== null",
         15)  # the WebSocket to 'self' was allowed
    poll(strict_page, "() => document.fonts.check('16px Vazirmatn')", 10)
    poll(strict_page, "() => document.getElementById('video').src.startsWith('blob:')", 10)
    assert not refused, refused


def test_the_registration_page_previews_a_chosen_file_under_the_policy(strict_page: Page, gateway: str) -> None:
    refused = refusals(strict_page)
    strict_page.goto(gateway + "/avatar-registration")
    poll(strict_page, "() => document.body.dataset.ready === 'true'", 10)
    photo = png_bytes(resized(np.asarray(data.astronaut()), (256, 256)))
    strict_page.evaluate(DROP_FILE, ["astronaut.png", "image/png", base64.b64encode(photo).decode()])
    poll(strict_page, "() => { const t = document.getElementById('drop-thumb');"
               " return t.src.startsWith('blob:') && t.complete && t.naturalWidth === 256; }",
         10)  # the blob: thumbnail was allowed to load
    poll(strict_page, "() => window.avatarRegistration.listed !== null", 10)  # the user's avatars were fetched
    strict_page.click("#ui-language")
    poll(strict_page, "() => document.documentElement.dir === 'rtl'"
                      " && document.querySelector('h1').textContent === 'ثبت آواتار'", 5)
    assert not refused, refused


def test_a_page_cannot_be_framed(strict_page: Page, gateway: str) -> None:
    refused = refusals(strict_page)
    strict_page.set_content(f"<iframe src='{gateway}/'></iframe>")
    strict_page.wait_for_timeout(2000)
    assert any("frame-ancestors" in text or "X-Frame-Options" in text for text in refused), refused
