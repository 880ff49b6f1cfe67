"""Waiting on a page that keeps its Content-Security-Policy, where Playwright's wait_for_function cannot run."""

from __future__ import annotations

import time

from playwright.sync_api import Page


def poll(page: Page, predicate: str, timeout_s: float) -> None:
    """Wait until ``predicate`` (a JS function) is true. page.evaluate runs over DevTools, outside the page's
    policy; wait_for_function would eval() the predicate in the page, which script-src 'self' refuses."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {predicate}")
        time.sleep(0.1)
