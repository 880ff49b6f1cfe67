"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright, never a downloaded one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
                 # WebRTC on loopback (tests/browser/test_webrtc_player.py): offer 127.0.0.1 candidates, as plain
                 # addresses rather than mDNS names, so ICE stays on this machine
                 "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One browser per test module: two Playwright drivers must not run at once in one thread."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `infra/bootstrap.sh test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh tab; any uncaught script error in it fails the test.

    The pages' Content-Security-Policy is bypassed: Playwright's wait_for_function evaluates its predicate with
    eval() in the page, which script-src 'self' refuses. tests/browser/test_page_security.py opens the pages
    under the policy (``strict_page``)."""
    yield from _tab(chromium, bypass_csp=True)


@pytest.fixture
def strict_page(chromium: Browser) -> Iterator[Page]:
    """A fresh tab that keeps the pages' Content-Security-Policy (wait with ``poll``, not wait_for_function)."""
    yield from _tab(chromium, bypass_csp=False)


def _tab(chromium: Browser, *, bypass_csp: bool) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1100, "height": 800}, bypass_csp=bypass_csp)
    tab = context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    yield tab
    context.close()
    assert not script_errors, f"uncaught script errors: {script_errors}"
