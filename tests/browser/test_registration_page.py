"""The avatar registration page in headless Chromium against the running service: drop, progress, report."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, Response
from skimage import data

from tests.integration.stack import RunningStack
from tests.unit.test_registration_media import png_bytes, resized

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SCREENSHOT = Path(__file__).resolve().parents[2] / ".data" / "screenshots" / "registration-page.png"

DROP_FILE = """([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  const zone = document.getElementById('drop');
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}"""


def open_page(page: Page, stack: RunningStack) -> None:
    page.goto(f"{stack.http}/avatar-registration")
    page.wait_for_selector("body[data-ready=true]", timeout=10_000)


def drop_file(page: Page, name: str, mime: str, content: bytes) -> None:
    page.evaluate(DROP_FILE, [name, mime, base64.b64encode(content).decode()])


def fill_form(page: Page, name: str, description: str = "", user_id: str = "browser") -> None:
    page.fill("#avatar-name", name)
    page.fill("#description", description)
    page.fill("#user-id", user_id)


def test_dropped_photo_shows_upload_and_analysis_progress_then_the_report_and_the_drawn_face(
        page: Page, stack: RunningStack) -> None:
    responses: list[Response] = []
    page.on("response", lambda response: responses.append(response))  # bodies are read after the handler
    open_page(page, stack)
    name = f"سارا {uuid.uuid4().hex[:6]}"
    fill_form(page, name, description="آواتار آزمایشی\nsecond line")
    photo = png_bytes(resized(np.asarray(data.astronaut()), (720, 720)))
    drop_file(page, "../astronaut.png", "image/png", photo)
    assert "astronaut.png" in page.inner_text("#file-name")
    assert page.is_visible("#drop-thumb")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)

    polls: list[dict[str, Any]] = [r.json() for r in responses if "/avatar/register/jobs/" in r.url]
    trace = page.evaluate("window.avatarRegistration")
    assert trace["uploadEvents"] >= 1, "the upload bar follows the browser's upload progress events"
    assert trace["stagesSeen"][0] == "upload" and trace["stagesSeen"][-1] == "done"
    assert polls and polls[-1]["state"] == "done"
    assert [p["progress"] for p in polls] == sorted(p["progress"] for p in polls)
    assert page.eval_on_selector("#analysis-progress", "e => e.value") == 1
    assert page.inner_text("#analysis-percent") == "100%"

    avatar_id = page.inner_text("#result-id")
    info = httpx.get(f"{stack.http}/avatar/{avatar_id}/info").json()
    assert info["name"] == name and page.inner_text("#result-name") == name
    assert page.eval_on_selector("#result-name", "e => getComputedStyle(e).direction") == "rtl"
    assert page.eval_on_selector("#result-description", "e => getComputedStyle(e).direction") == "rtl"
    rows = page.eval_on_selector_all("#checks tr", "rows => rows.map(r => r.dataset.check)")
    assert rows == [check["name"] for check in info["quality_report"]["checks"]]
    assert page.inner_text("#report-verdict") in ("passed", "accepted with warnings")
    page.wait_for_function("() => document.getElementById('preview').complete", timeout=10_000)
    size = page.eval_on_selector("#preview", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [info["width"], info["height"]] == [720, 720]
    assert page.is_hidden("#error")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000


@pytest.mark.parametrize(("filename", "mime", "content", "code"), [
    ("coffee.png", "image/png", png_bytes(np.asarray(data.coffee(), dtype=np.uint8)), "no_face"),
    ("notes.jpg", "image/jpeg", b"these are my notes, not a photo\n" * 20, "unsupported_media_type"),
])
def test_refused_upload_shows_its_code_and_message(
        filename: str, mime: str, content: bytes, code: str, page: Page, stack: RunningStack) -> None:
    open_page(page, stack)
    fill_form(page, f"refused {uuid.uuid4().hex[:6]}")
    drop_file(page, filename, mime, content)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.inner_text("#error-code") == code
    assert page.inner_text("#error-message")
    assert page.is_hidden("#result")
    if code == "no_face":  # refused after analysis: the report says why
        assert page.inner_text("#report-verdict") == "refused"


def test_submitting_without_a_file_asks_for_one(page: Page, stack: RunningStack) -> None:
    open_page(page, stack)
    fill_form(page, "no file")
    page.click("#submit")
    assert page.inner_text("#error-code") == "missing_file"


# --- the Persian interface, the user's avatars, names and file names in their order -------------------------


def register_directly(stack: RunningStack, user_id: str, name: str) -> str:
    photo = png_bytes(resized(np.asarray(data.astronaut()), (720, 720)))
    response = httpx.post(f"{stack.http}/avatar/register", data={"avatar_name": name, "user_id": user_id},
                          files={"file": ("face.png", photo, "image/png")}, timeout=60)
    assert response.status_code == 201, response.text
    return str(response.json()["avatar_id"])


def test_the_language_button_turns_the_page_persian_and_right_to_left_and_is_remembered(
        page: Page, stack: RunningStack) -> None:
    open_page(page, stack)
    assert page.eval_on_selector("html", "e => [e.lang, e.dir]") == ["en", "ltr"]
    page.click("#ui-language")
    assert page.eval_on_selector("html", "e => [e.lang, e.dir]") == ["fa", "rtl"]
    assert page.inner_text("h1") == "ثبت آواتار" and page.inner_text("#submit") == "ثبت"
    assert page.get_attribute("#avatar-name", "placeholder") == "مثلاً سارا — Sara"
    assert page.inner_text("#ui-language") == "English"
    # The form's start edge is on the right: the name field's label starts at the panel's right side.
    label = page.eval_on_selector("label", "e => { const r = e.getBoundingClientRect(), s = e.querySelector('span')"
                                  ".getBoundingClientRect(); return [r.right - s.right, s.left - r.left]; }")
    assert label[0] < label[1]
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.eval_on_selector("html", "e => e.dir") == "rtl", "the choice is remembered"
    page.click("#ui-language")
    assert page.inner_text("h1") == "Register an avatar" and page.eval_on_selector("html", "e => e.dir") == "ltr"


def test_the_users_avatars_are_listed_and_deleted_from_the_page(page: Page, stack: RunningStack) -> None:
    user_id = f"lister-{uuid.uuid4().hex[:6]}"
    kept, gone = (register_directly(stack, user_id, name) for name in ("مریم", "Zoe"))
    open_page(page, stack)
    page.fill("#user-id", user_id)
    page.press("#user-id", "Tab")  # the change event reloads the list
    page.wait_for_function("n => document.querySelectorAll('#avatar-list li').length === n", arg=2)
    names = page.eval_on_selector_all("#avatar-list .avatar-name", "els => els.map(e => e.textContent)")
    assert sorted(names) == ["Zoe", "مریم"] and page.inner_text("#mine-user") == user_id
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#avatar-list li[data-avatar-id='{gone}'] button.delete")
    page.wait_for_function("n => document.querySelectorAll('#avatar-list li').length === n", arg=1)
    assert page.inner_text("#mine-status") == "Deleted “Zoe”."
    assert httpx.get(f"{stack.http}/avatar/{gone}/info").status_code == 404
    assert httpx.get(f"{stack.http}/avatar/{kept}/info").status_code == 200
    page.once("dialog", lambda dialog: dialog.dismiss())  # cancelled: nothing is deleted
    page.click(f"#avatar-list li[data-avatar-id='{kept}'] button.delete")
    assert httpx.get(f"{stack.http}/avatar/{kept}/info").status_code == 200


# Where each of two elements' text sits on the line: [left, right] of each, and of the first and last
# character of the second, so an isolate's inner order is checked too.
BOXES = """([first, second]) => {
  const box = (id) => document.getElementById(id).getBoundingClientRect();
  const charBox = (id, index) => { const node = document.getElementById(id).firstChild, range = document.createRange();
    range.setStart(node, index); range.setEnd(node, index + 1); return range.getBoundingClientRect(); };
  const text = document.getElementById(second).textContent;
  return { first: [box(first).left, box(first).right], second: [box(second).left, box(second).right],
           secondFirstChar: charBox(second, 0).left, secondLastChar: charBox(second, text.length - 1).left };
}"""


def test_a_persian_name_beside_a_file_name_keeps_both_in_reading_order(page: Page, stack: RunningStack) -> None:
    # A name ending in digits and a file name starting with them: without isolation the digits of both join
    # the name's right-to-left run and the file name's "3" lands on the wrong side.
    open_page(page, stack)
    name = f"سارا {uuid.uuid4().int % 90 + 10}"
    fill_form(page, name)
    photo = png_bytes(resized(np.asarray(data.astronaut()), (720, 720)))
    drop_file(page, "3-portrait.png", "image/png", photo)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#result-name") == name and page.inner_text("#result-file") == "3-portrait.png"
    ltr = page.evaluate(BOXES, ["result-name", "result-file"])
    assert ltr["first"][1] <= ltr["second"][0], "left to right: the name, then the file name"
    assert ltr["secondFirstChar"] < ltr["secondLastChar"], "the file name reads left to right, '3' first"
    page.click("#ui-language")
    rtl = page.evaluate(BOXES, ["result-name", "result-file"])
    assert rtl["first"][0] >= rtl["second"][1], "right to left: the name, then (to its left) the file name"
    assert rtl["secondFirstChar"] < rtl["secondLastChar"], "the file name still reads left to right"
    files = page.evaluate(BOXES, ["file-name-text", "file-size"])
    assert files["first"][0] >= files["second"][1], "in Persian the size follows the file name, to its left"
    assert page.eval_on_selector("#result-name", "e => getComputedStyle(e).unicodeBidi") == "isolate"
