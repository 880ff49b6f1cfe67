"""The web player at ``/`` in headless Chromium against the running service: it plays, subtitles, interrupts."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route

from tests.integration.stack import RunningStack

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PERSIAN = "سلام، حال شما چطور است؟"
ENGLISH = "Good morning. How are you today?"
LONG_ENGLISH = ("This is a long sentence that keeps the avatar talking for quite a while, so that there is time "
                "to interrupt it. It goes on and on, with more words, and more clauses, and even more words.")

VIDEO_STATE = """() => {
  const v = document.getElementById('video');
  const b = v.buffered;
  return {time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, paused: v.paused,
          bufferedEnd: b.length ? b.end(b.length - 1) : 0};
}"""
REQUESTS = """() => [...window.avatarPlayer.requests.values()].map(r => ({
  id: r.id, text: r.text, state: r.state, base: r.base, end: r.end,
  firstChunkMs: r.firstChunkAt === null ? null : r.firstChunkAt - r.sentAt}))"""


def open_player(page: Page, stack: RunningStack, query: str = "") -> None:
    page.goto(f"{stack.http}/{query}")
    page.wait_for_function("window.avatarPlayer && window.avatarPlayer.connection.sessionId !== null",
                           timeout=15_000)


def speak(page: Page, text: str, language: str = "") -> None:
    page.fill("#text", text)
    page.select_option("#language", language)
    page.click("#send")


def video(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(VIDEO_STATE)
    return state


def requests(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(REQUESTS)
    return found


def wait_until_all_done(page: Page, count: int = 1, timeout_ms: int = 30_000) -> None:
    page.wait_for_function(f"""() => {{
      const all = [...window.avatarPlayer.requests.values()];
      return all.length === {count} && all.every(r => r.state === 'done'); }}""", timeout=timeout_ms)


def shown_text(page: Page, selector: str) -> str:
    """An element's text without the bidi isolates the page wraps quantities in."""
    return (page.text_content(selector) or "").strip("\u2066\u2069")


def subtitles_shown(page: Page) -> list[str]:
    shown: list[str] = page.evaluate("() => window.avatarPlayer.subtitlesShown.map(s => s.text)")
    return shown


def test_a_persian_sentence_plays_frames_with_its_subtitle_and_latency_shown(
        page: Page, stack: RunningStack, tmp_path: Path) -> None:
    open_player(page, stack)
    speak(page, PERSIAN, "fa")
    page.wait_for_function("() => { const v = document.getElementById('video');"
                           " return v.getVideoPlaybackQuality().totalVideoFrames > 10 && v.currentTime > 0.3; }",
                           timeout=15_000)
    before = video(page)
    time.sleep(0.4)
    after = video(page)
    assert after["frames"] > before["frames"] and after["time"] > before["time"], (before, after)
    page.wait_for_function("() => window.avatarPlayer.subtitlesShown.length > 0", timeout=10_000)
    assert any("سلام" in text for text in subtitles_shown(page))
    assert re.fullmatch(r"[\d,]+ ms", shown_text(page, "#stat-first-chunk")), "text sent → first chunk"
    assert re.fullmatch(r"[\d,]+ ms", shown_text(page, "#stat-play-start")), "text sent → first frame"
    assert re.fullmatch(r"[+−]\d+\.\d\d s", shown_text(page, "#stat-margin")), "arrival vs playback margin"
    assert requests(page)[0]["firstChunkMs"] < 1500
    page.screenshot(path=str(tmp_path / "player-persian.png"))
    wait_until_all_done(page, 1)


def test_between_utterances_the_speech_video_rests_and_keeps_its_first_frame_as_the_fallback_still(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack)
    speak(page, "Hello.", "en")
    wait_until_all_done(page, 1)
    page.wait_for_function("document.getElementById('activity').dataset.state === 'idle'")
    resting = video(page)
    time.sleep(0.5)
    assert video(page)["time"] == pytest.approx(resting["time"], abs=0.01), "no speech playback while idle"
    assert page.evaluate("document.getElementById('video').poster").startswith("data:image/jpeg")
    assert page.is_hidden("#placeholder")


IDLE_STATE = """() => {
  const v = document.getElementById('idle-video');
  return {hidden: v.hidden, time: v.currentTime, paused: v.paused, loop: v.loop, muted: v.muted,
          duration: v.duration, src: v.currentSrc};
}"""


def idle_video(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(IDLE_STATE)
    return state


def test_the_idle_clip_loops_after_selection_hides_while_speech_plays_and_comes_back_after(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack)
    page.wait_for_function("() => { const v = document.getElementById('idle-video');"
                           " return !v.hidden && v.currentTime > 0.3; }", timeout=20_000)
    first = idle_video(page)
    time.sleep(0.5)
    later = idle_video(page)
    assert later["time"] > first["time"] + 0.2 and not later["paused"], (first, later)
    assert later["loop"] and later["muted"] and later["src"].startswith("blob:")
    assert 2 <= later["duration"] <= 10, "a few seconds"
    assert page.is_hidden("#placeholder"), "the idle avatar replaces the placeholder text"
    boxes = page.evaluate("""() => ['video', 'idle-video'].map(id => {
      const r = document.getElementById(id).getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })""")
    assert boxes[0] == boxes[1], "the clip covers the speech video exactly: no layout jump"
    speak(page, ENGLISH, "en")
    page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=15_000)
    assert page.is_hidden("#idle-video"), "hidden while speech plays"
    paused_at = idle_video(page)
    assert paused_at["paused"]
    wait_until_all_done(page, 1)
    page.wait_for_function("!document.getElementById('idle-video').hidden", timeout=5_000)
    page.wait_for_function(f"document.getElementById('idle-video').currentTime > {paused_at['time'] + 0.2}"
                           f" || document.getElementById('idle-video').currentTime < {paused_at['time']}",
                           timeout=5_000)


def test_when_the_idle_clip_cannot_be_loaded_the_player_shows_the_still_and_still_speaks(
        page: Page, stack: RunningStack) -> None:
    def refuse(route: Route) -> None:
        route.fulfill(status=503, content_type="application/json",
                      body='{"code": "database_unavailable", "message": "try again"}')

    page.route("**/idle.mp4", refuse)
    open_player(page, stack)
    page.wait_for_function("window.avatarPlayer.idle.state === 'failed'", timeout=10_000)
    assert page.is_hidden("#idle-video")
    speak(page, "Hello.", "en")
    wait_until_all_done(page, 1)
    assert page.is_hidden("#idle-video")
    assert page.evaluate("document.getElementById('video').poster").startswith("data:image/jpeg")


def test_while_the_worker_renders_the_idle_clip_the_player_shows_the_still_and_asks_again_after_retry_after(
        page: Page, stack: RunningStack) -> None:
    answered: list[int] = []

    def pending_twice(route: Route) -> None:
        if len(answered) < 2:
            answered.append(503)
            route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "1"},
                          body='{"code": "idle_clip_pending", "message": "being rendered"}')
        else:
            answered.append(200)
            route.continue_()

    page.route("**/idle.mp4", pending_twice)
    open_player(page, stack)
    page.wait_for_function("window.avatarPlayer.idle.state === 'pending'", timeout=10_000)
    assert page.is_hidden("#idle-video") and page.is_visible("#placeholder"), "no clip yet: what shows without one"
    page.wait_for_function("() => { const v = document.getElementById('idle-video');"
                           " return !v.hidden && v.currentTime > 0.3; }", timeout=30_000)
    assert answered[:3] == [503, 503, 200] and page.evaluate("window.avatarPlayer.idle.tries") >= 3
    assert page.is_hidden("#placeholder"), "the idle avatar replaces the placeholder once it came"


def test_sentences_spoken_one_after_another_from_idle_all_play_on_one_gapless_timeline(
        page: Page, stack: RunningStack) -> None:
    # Found by the benchmark: when a request's audio outlasts its video, the idle playhead stops a few ms past
    # the buffered range (where both tracks have data); the next request placed there left a gap and never
    # started. The player now places it at the buffered end and brings the playhead back.
    open_player(page, stack)
    sentences = [PERSIAN, ENGLISH, "امروز هوا خیلی خوب است.", "Hello there.", PERSIAN]
    for count, sentence in enumerate(sentences, start=1):
        speak(page, sentence)
        wait_until_all_done(page, count, timeout_ms=15_000)
    ranges = page.evaluate("""() => { const b = document.getElementById('video').buffered;
                                      return [...Array(b.length).keys()].map(i => [b.start(i), b.end(i)]); }""")
    assert len(ranges) == 1, f"one gapless range: {ranges}"
    bases = sorted(r["base"] for r in requests(page))
    ends = sorted(r["end"] for r in requests(page))
    assert all(abs(base - end) < 0.1 for base, end in zip(bases[1:], ends[:-1], strict=True))


def test_an_english_sentence_queued_behind_a_persian_one_plays_on_one_timeline_without_a_stall(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack)
    page.evaluate("""() => { window.stalls = [];
      document.getElementById('video').addEventListener('waiting', e => window.stalls.push(e.target.currentTime)); }""")
    speak(page, PERSIAN, "fa")
    speak(page, ENGLISH)  # language detected
    wait_until_all_done(page, 2)
    first, second = sorted(requests(page), key=lambda r: r["base"])
    assert (first["text"], second["text"]) == (PERSIAN, ENGLISH)
    assert second["base"] == pytest.approx(first["end"], abs=0.1), "the second request starts where the first ends"
    stalls_inside = [t for t in page.evaluate("window.stalls") if 0.05 < t < second["end"] - 0.15]
    assert stalls_inside == [], "playback never waited for data between or within the requests"
    shown = subtitles_shown(page)
    assert any("سلام" in text for text in shown) and any("Good morning" in text for text in shown)
    assert video(page)["frames"] >= 0.8 * 25 * second["end"]


def test_the_interrupt_button_stops_playback_at_once_and_the_next_sentence_plays(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack)
    speak(page, LONG_ENGLISH, "en")
    page.wait_for_function("document.getElementById('video').currentTime > 0.6", timeout=15_000)
    page.click("#interrupt")
    time.sleep(0.3)
    stopped = video(page)
    time.sleep(1.0)
    later = video(page)
    assert later["time"] - stopped["time"] < 0.05 and later["frames"] - stopped["frames"] <= 1, (stopped, later)
    assert later["bufferedEnd"] <= later["time"] + 0.1, "the buffer ahead was cleared"
    assert requests(page)[0]["state"] == "interrupted"
    assert page.get_attribute("#history li", "data-state") == "interrupted"
    page.wait_for_function("window.avatarPlayer.confirmedInterrupts.length > 0", timeout=5_000)
    speak(page, "Hello again.", "en")
    page.wait_for_function(f"document.getElementById('video').currentTime > {later['time'] + 0.3}", timeout=15_000)


def test_a_dropped_connection_resumes_the_session_and_the_sentence_plays_to_its_end_without_a_gap(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack)
    session = page.evaluate("window.avatarPlayer.connection.sessionId")
    speak(page, LONG_ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.stats.chunks >= 2", timeout=15_000)
    page.evaluate("window.avatarPlayer.connection.socket.close()")
    wait_until_all_done(page)
    assert page.evaluate("window.avatarPlayer.connection.sessionId") == session
    assert "resumed" in (page.text_content("#status") or "")
    received = page.evaluate("""() => { const r = [...window.avatarPlayer.requests.values()][0];
                                        return [r.chunks, Math.max(...r.seqs)]; }""")
    assert received[0] == received[1] + 1, "every chunk once: none lost, none twice"
    ranges = page.evaluate("""() => { const b = document.getElementById('video').buffered;
                                      return [...Array(b.length).keys()].map(i => [b.start(i), b.end(i)]); }""")
    assert len(ranges) == 1 and ranges[0][0] == 0, f"one gapless range: {ranges}"


def test_the_persian_interface_is_right_to_left_with_the_shipped_persian_font(
        page: Page, stack: RunningStack) -> None:
    open_player(page, stack, "?ui=fa")
    assert page.evaluate("[document.documentElement.dir, document.documentElement.lang]") == ["rtl", "fa"]
    assert page.text_content("#send") == "بگو"
    page.fill("#text", PERSIAN)
    assert page.evaluate("document.getElementById('text').matches(':dir(rtl)')")
    page.fill("#text", ENGLISH)
    assert page.evaluate("document.getElementById('text').matches(':dir(ltr)')"), "dir=auto follows the text"
    page.evaluate("document.fonts.ready")
    assert page.evaluate("""() => [...document.fonts].some(f => f.family.includes('Vazirmatn')
                                                               && f.status === 'loaded')""")
    assert page.evaluate("document.fonts.check('16px Vazirmatn', 'سلام')")
    page.click("#ui-language")
    assert page.evaluate("document.documentElement.dir") == "ltr" and page.text_content("#send") == "Speak"


def test_the_avatar_picker_lists_the_services_avatars(page: Page, stack: RunningStack) -> None:
    listed = httpx.get(f"{stack.http}/avatar/list", timeout=10)
    assert listed.status_code == 200
    expected = [avatar["avatar_id"] for avatar in listed.json()["avatars"]]
    open_player(page, stack)
    options = page.eval_on_selector_all("#avatar option", "options => options.map(o => o.value)")
    assert options == expected and page.input_value("#avatar") == "sample"


def test_the_avatar_picker_falls_back_to_the_sample_avatar_when_the_list_fails(
        page: Page, stack: RunningStack) -> None:
    def fail(route: Route) -> None:
        route.abort("connectionrefused")

    page.route("**/avatar/list*", fail)
    open_player(page, stack)
    assert page.eval_on_selector_all("#avatar option", "options => options.map(o => o.value)") == ["sample"]
    assert "sample avatar" in (page.text_content("#status") or "")


def test_the_page_and_its_static_files_are_served_and_nothing_outside_them(stack: RunningStack) -> None:
    page = httpx.get(f"{stack.http}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/player.js" in page.text
    for path, media_type in (("player.js", "text/javascript"), ("player.css", "text/css"), ("common.css", "text/css"),
                             ("player-fonts/Vazirmatn-Regular.woff2", "font/woff2"),
                             ("player-fonts/OFL.txt", "text/plain")):
        response = httpx.get(f"{stack.http}/static/{path}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type), path
    for sneaky in ("%2e%2e/app.py", "..%2f..%2fpyproject.toml", "missing.js", "player-fonts"):
        response = httpx.get(f"{stack.http}/static/{sneaky}", timeout=10)
        assert response.status_code == 404 and response.json()["code"] == "not_found", sneaky
