"""The web player over WebRTC in headless Chromium against the running service: frames, audio, interrupt, fallback."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser.test_player import ENGLISH, LONG_ENGLISH, open_player, speak, wait_until_all_done
from tests.integration.stack import RunningStack

pytestmark = [pytest.mark.integration, pytest.mark.browser]

RTC_STATE = """async () => {
  const rtc = window.avatarPlayer.rtc;
  const v = document.getElementById('rtc-video');
  const inbound = await rtc.inbound();
  return {live: rtc.live, frames: rtc.frames, width: v.videoWidth, time: v.currentTime,
          video: inbound.video || null, audio: inbound.audio || null,
          playStartMs: window.avatarPlayer.stats.playStartMs};
}"""

# Clicks Stop, then samples inbound-rtp every 10 ms for 1.5 s: when did decoded video frames, received speech
# packets and the played audio's energy last increase, counted from the click? The audio track never pauses
# (silence between utterances), so speech shows in the packets' size: Opus speech at 48 kb/s is 90-130 bytes a
# 20 ms packet, silence 55 and then 1 byte (DTX), measured. The energy is counted where Chromium plays the
# audio, behind its playout buffers. scripts/benchmark_webrtc.py quotes the same figures.
SPEECH_PACKET_BYTES = 75
SPEECH_ENERGY = 1e-6
INTERRUPT_AND_WATCH = """async (how = 'click') => {
  const rtc = window.avatarPlayer.rtc;
  const sample = async () => {
    const s = await rtc.inbound();
    return {t: performance.now(), frames: s.video.framesDecoded, videoPackets: s.video.packets,
            packets: s.audio.packets, bytes: s.audio.bytes, energy: s.audio.audioEnergy};
  };
  const before = await sample();
  const clickedAt = performance.now();
  if (how === 'peer') rtc.interrupt();  // the peer's own flush alone: the pipeline goes on rendering the request
  else document.getElementById('interrupt').click();
  let last = before, videoLast = clickedAt, speechLast = clickedAt, energyLast = clickedAt;
  let videoPacketsLast = clickedAt;
  while (performance.now() - clickedAt < 1500) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    const now = await sample();
    if (now.frames > last.frames) videoLast = now.t;
    if (now.videoPackets > last.videoPackets) videoPacketsLast = now.t;
    const packets = now.packets - last.packets;
    if (packets > 0 && (now.bytes - last.bytes) / packets > SPEECH_PACKET_BYTES) speechLast = now.t;
    if (now.energy > last.energy + SPEECH_ENERGY) energyLast = now.t;
    last = now;
  }
  // The peer's flush answered (Resource Timing of its POST): what the gateway took, before any media stops.
  const post = performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('/interrupt') && e.startTime >= clickedAt).at(0);
  return {videoStopMs: videoLast - clickedAt, audioStopMs: speechLast - clickedAt,
          videoPacketsStopMs: videoPacketsLast - clickedAt,
          flushAnsweredMs: post && post.responseStart > 0 ? post.responseStart - clickedAt : null,
          energyStopMs: energyLast - clickedAt, framesAfter: last.frames - before.frames,
          packetsAfter: last.packets - before.packets};
}""".replace("SPEECH_PACKET_BYTES", str(SPEECH_PACKET_BYTES)).replace("SPEECH_ENERGY", str(SPEECH_ENERGY))


def rtc_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(RTC_STATE)
    return state


def open_webrtc_player(page: Page, stack: RunningStack) -> None:
    open_player(page, stack, "?transport=webrtc")
    page.wait_for_function("window.avatarPlayer.rtc.live || window.avatarPlayer.rtcFailure !== null",
                           timeout=15_000)
    assert page.evaluate("window.avatarPlayer.rtcFailure") is None, "WebRTC must connect on loopback"


def test_over_webrtc_frames_decode_and_advance_and_the_audio_track_receives_sound(
        page: Page, stack: RunningStack) -> None:
    open_webrtc_player(page, stack)
    assert page.is_hidden("#video") and page.is_visible("#rtc-video")
    idle = rtc_state(page)
    speak(page, ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.rtc.frames > 10 && "
                           "document.getElementById('rtc-video').videoWidth > 0", timeout=15_000)
    before = rtc_state(page)
    time.sleep(0.4)
    after = rtc_state(page)
    assert after["frames"] > before["frames"], (before, after)
    assert after["time"] > before["time"], "the video element's clock advances"
    assert after["video"]["framesDecoded"] > before["video"]["framesDecoded"]
    assert after["audio"]["packets"] > before["audio"]["packets"], (before, after)
    assert after["audio"]["bytes"] > before["audio"]["bytes"]
    assert after["audio"]["audioEnergy"] > (idle["audio"] or {}).get("audioEnergy", 0), "speech, not silence"
    assert after["playStartMs"] is not None and after["playStartMs"] > 0
    wait_until_all_done(page, 1)
    # Nothing is left to play: the frames stop, and the audio goes on as silence (packets, no more energy)
    # once Chromium has played what it holds.
    page.wait_for_function(f"""async () => {{
      const s = await window.avatarPlayer.rtc.inbound(), last = window.quietCheck;
      window.quietCheck = s;
      return last !== undefined && s.video.framesDecoded === last.video.framesDecoded
        && s.audio.audioEnergy - last.audio.audioEnergy < {50 * SPEECH_ENERGY}; }}""", polling=500, timeout=15_000)
    quiet = rtc_state(page)
    time.sleep(0.5)
    assert rtc_state(page)["audio"]["packets"] > quiet["audio"]["packets"], "one continuous audio clock"


def test_over_webrtc_an_interrupt_stops_video_and_audio_at_once(page: Page, stack: RunningStack) -> None:
    open_webrtc_player(page, stack)
    speak(page, LONG_ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.rtc.frames > 25", timeout=20_000)
    watched: dict[str, float] = page.evaluate(INTERRUPT_AND_WATCH, "click")
    # That both stop, not how fast (scripts/benchmark_webrtc.py measures that; the target is 150 ms): the
    # sentence would go on for seconds. What the gateway controls (no speech packet after its flush) took
    # 50-283 ms from the click at load 5-14 on these 2 cores, in the suite beside every other test; the last
    # decoded frame comes later by what Chromium's jitter buffers hold (docs/clients.md has the figures).
    assert watched["audioStopMs"] <= 1000, watched
    assert watched["videoStopMs"] < 2000, watched
    assert watched["packetsAfter"] > 40, "the audio goes on, as silence"
    # What Chromium still holds of the stopped speech is not heard: the player mutes at the click (and the
    # idle clip covers the picture) until the next request's first frame shows.
    assert page.evaluate("document.getElementById('rtc-video').muted") is True
    assert page.is_visible("#idle-video")
    states = page.evaluate("[...window.avatarPlayer.requests.values()].map(r => r.state)")
    assert states == ["interrupted"], states
    speak(page, "Hello again.", "en")  # the session goes on over WebRTC after the interrupt
    frames = rtc_state(page)["video"]["framesDecoded"]
    page.wait_for_function(f"(async () => (await window.avatarPlayer.rtc.inbound()).video.framesDecoded > "
                           f"{frames + 10})()", timeout=15_000)
    page.wait_for_function("!document.getElementById('rtc-video').muted", timeout=5_000)


# The codec each inbound track was negotiated with, as Chromium reports it (inbound-rtp → codec stats).
CODECS = """async () => { const kinds = {}; const stats = await window.avatarPlayer.rtc.pc.getStats();
  stats.forEach((r) => { if (r.type === 'inbound-rtp') kinds[r.kind] = stats.get(r.codecId)?.mimeType; });
  return kinds; }"""


def test_over_webrtc_the_video_is_the_lip_syncs_h264_passed_through_and_its_frames_decode(
        page: Page, stack: RunningStack) -> None:
    open_webrtc_player(page, stack)
    speak(page, ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.rtc.frames > 10", timeout=15_000)
    assert page.evaluate(CODECS) == {"video": "video/H264", "audio": "audio/opus"}
    decoded = page.evaluate("""async () => { const stats = await window.avatarPlayer.rtc.pc.getStats();
      let found = null; stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') found = r; });
      return {decoded: found.framesDecoded, keyFrames: found.keyFramesDecoded, width: found.frameWidth,
              dropped: found.framesDropped ?? 0}; }""")
    # Every chunk starts with an IDR (with its SPS and PPS before it): more than one key frame by now.
    assert decoded["decoded"] > 10 and decoded["keyFrames"] >= 1 and decoded["width"] > 0, decoded
    wait_until_all_done(page, 1)


# A browser without H.264 for WebRTC: the player's video transceiver offers every codec but H.264.
NO_H264 = """(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (kind, init) {
    const transceiver = add.call(this, kind, init);
    if (kind === 'video') transceiver.setCodecPreferences(RTCRtpReceiver.getCapabilities('video').codecs
      .filter((c) => c.mimeType !== 'video/H264'));
    return transceiver;
  };
})();"""


def test_a_browser_offering_no_h264_gets_the_video_re_encoded_as_vp8_and_its_frames_decode(
        page: Page, stack: RunningStack) -> None:
    page.add_init_script(NO_H264)
    open_webrtc_player(page, stack)
    speak(page, ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.rtc.frames > 10", timeout=20_000)
    assert page.evaluate(CODECS) == {"video": "video/VP8", "audio": "audio/opus"}
    wait_until_all_done(page, 1)


def test_without_rtcpeerconnection_the_player_falls_back_to_mse_and_plays(page: Page, stack: RunningStack) -> None:
    page.add_init_script("delete window.RTCPeerConnection;")
    open_player(page, stack, "?transport=webrtc")
    page.wait_for_function("window.avatarPlayer.rtcFailure !== null", timeout=15_000)
    assert "RTCPeerConnection" in page.evaluate("window.avatarPlayer.rtcFailure")
    assert page.is_visible("#video") and page.is_hidden("#rtc-video")
    speak(page, "Hello.", "en")
    page.wait_for_function("document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > 5",
                           timeout=15_000)
    wait_until_all_done(page, 1)


def test_the_offer_endpoint_refuses_an_unknown_session_and_a_broken_offer(page: Page, stack: RunningStack) -> None:
    unknown = httpx.post(f"{stack.http}/webrtc/offer", json={"session_id": "nobody", "sdp": "v=0\r\n"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_session"
    open_player(page, stack)
    session_id = page.evaluate("window.avatarPlayer.connection.sessionId")
    broken = httpx.post(f"{stack.http}/webrtc/offer", json={"session_id": session_id, "sdp": "not sdp"}, timeout=10)
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_offer", broken.text


def test_flushing_the_peer_alone_stops_what_it_has_queued_and_refuses_the_rest_of_the_request(
        page: Page, stack: RunningStack) -> None:
    """POST /webrtc/peers/{id}/interrupt: for a request whose chunks have all arrived, the WebSocket's interrupt
    stops nothing in the pipeline (nothing is in flight), yet the peer may still have seconds of it queued."""
    open_webrtc_player(page, stack)
    speak(page, LONG_ENGLISH, "en")
    page.wait_for_function("window.avatarPlayer.rtc.frames > 25", timeout=20_000)
    watched: dict[str, float] = page.evaluate(INTERRUPT_AND_WATCH, "peer")
    # The long sentence had seconds left, still being rendered: without the flush, frames and speech go on (the
    # bounds are loose: the suite runs beside every other test on 2 cores; the benchmark measures the speed).
    # The flush answers without a worker thread (gateway/deps.py): with three thread hops, its POST
    # was answered up to 1.6 s late on a CPU-starved gateway, one run in five.
    assert watched["flushAnsweredMs"] is not None and watched["flushAnsweredMs"] < 1000, watched
    assert watched["videoStopMs"] < 2000 and watched["audioStopMs"] < 1000, watched
    assert watched["framesAfter"] < 30, watched
    unknown = httpx.post(f"{stack.http}/webrtc/peers/nobody/interrupt",
                         params={"session_id": page.evaluate("window.avatarPlayer.connection.sessionId")}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_peer"

