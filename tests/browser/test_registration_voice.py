"""The registration page's optional default voice in headless Chromium: chosen in the form, stored, shown."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page
from skimage import data

from tests.browser.test_registration_page import drop_file, fill_form, open_page
from tests.integration.stack import RunningStack
from tests.unit.test_registration_media import png_bytes, resized

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_a_voice_chosen_on_the_page_becomes_the_avatar_default_and_is_shown(page: Page, stack: RunningStack) -> None:
    open_page(page, stack)
    fill_form(page, f"voiced {uuid.uuid4().hex[:6]}")
    page.select_option("#tts", "espeak")
    page.fill("#voice", " f3 ")
    drop_file(page, "astronaut.png", "image/png", png_bytes(resized(np.asarray(data.astronaut()), (480, 480))))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#result-voice") == "espeak · f3"
    info = httpx.get(f"{stack.http}/avatar/{page.inner_text('#result-id')}/info").json()
    assert (info["tts"], info["voice"]) == ("espeak", "f3")
