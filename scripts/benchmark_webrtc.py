"""WebRTC against MSE in headless Chromium, one run of the real stack: first frame shown, interrupt, CPU.

    python scripts/benchmark_webrtc.py              # starts broker, database and service; ~2 minutes
    python scripts/benchmark_webrtc.py --runs 10

Two player tabs on one service, one per transport (``?transport=mse`` and ``?transport=webrtc``), speak the
same sentences in turn, so both see the same machine load. Figures:
- text sent → first frame shown: the first requestVideoFrameCallback of the tab's visible video after the
  click (the MSE <video> or the WebRTC one), p50 and p95 per transport;
- WebRTC interrupt: click → the peer's flush answered (its POST's response, Resource Timing), and the last
  increase of inbound-rtp video packets received (what the gateway sent), of speech-sized audio packets
  received (the audio track sends silence between utterances), of video frames decoded (Chromium holds the
  video in sync with the audio's jitter buffer) and of the played audio's energy (sampled every 10 ms in
  the page);
- CPU: the gateway process's CPU time while each transport's tab speaks, per second of speech, and the
  parts of the WebRTC cost measured in-process: demuxing the fMP4 chunks and decoding their AAC to 48 kHz,
  the video for the codec the browser negotiated (H.264: Annex B access units packetised by aiortc, no
  decoding; VP8: PyAV decode and aiortc's re-encode), and the audio track's Opus encoding.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from gateway.webrtc.media import RequestMedia
from gateway.webrtc.playout import AUDIO_BLOCK, AudioBlock, Playout
from gateway.webrtc.tracks import MediaClock, PlayoutAudioTrack, PlayoutFeed
from processors.lipsync.media.encoder import FragmentedMp4Writer
from scripts.benchmark_clients import ENGLISH, LONG_ENGLISH, PERSIAN, progress, service
from scripts.report_table import table
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_webrtc_player import INTERRUPT_AND_WATCH
from tests.integration.stack import RunningStack

TRANSPORTS = ("mse", "webrtc")
# Logs the time of every frame the visible speech video shows (requestVideoFrameCallback's clock is
# performance.now()), so "first frame shown" is measured the same way for both transports.
FRAME_LOG = """() => {
  window.frameTimes = [];
  const watch = (video) => {
    const cb = (now) => { if (!video.hidden) window.frameTimes.push(now); video.requestVideoFrameCallback(cb); };
    video.requestVideoFrameCallback(cb);
  };
  watch(document.getElementById('video'));
  watch(document.getElementById('rtc-video'));
}"""
SPEAK = """(text) => {
  document.getElementById('text').value = text;
  window.sentAt = performance.now();
  document.getElementById('send').click();
}"""
FIRST_FRAME_MS = """() => { const t = window.frameTimes.find((t) => t > window.sentAt);
  return t ? t - window.sentAt : null; }"""
ALL_DONE = """(count) => { const all = [...window.avatarPlayer.requests.values()];
  return all.length === count && all.every((r) => r.state === 'done' || r.state === 'interrupted'); }"""
CODECS = """async () => { const kinds = {}; const stats = await window.avatarPlayer.rtc.pc.getStats();
  stats.forEach((r) => { if (r.type === 'inbound-rtp') kinds[r.kind] = stats.get(r.codecId)?.mimeType; });
  return kinds; }"""


def gateway_process(stack: RunningStack) -> psutil.Process:
    for child in psutil.Process(stack.process.pid).children(recursive=True):
        if "gateway.main" in " ".join(child.cmdline()):
            return child
    raise LookupError("no gateway process")


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def open_tab(browser: Any, stack: RunningStack, transport: str) -> Any:
    # The pages' Content-Security-Policy (script-src 'self') refuses the eval() of Playwright's predicates.
    page = browser.new_page(bypass_csp=True)
    page.goto(f"{stack.http}/?transport={transport}")
    page.wait_for_function("window.avatarPlayer && window.avatarPlayer.connection.sessionId !== null",
                           timeout=20_000)
    if transport == "webrtc":
        page.wait_for_function("window.avatarPlayer.rtc.live || window.avatarPlayer.rtcFailure !== null",
                               timeout=20_000)
        failure = page.evaluate("window.avatarPlayer.rtcFailure")
        if failure:
            raise RuntimeError(f"WebRTC did not connect: {failure}")
    page.evaluate(FRAME_LOG)
    return page


QUIET = """() => { const last = window.frameTimes.at(-1);
  return last === undefined || performance.now() - last > 500; }"""


def speak_once(page: Any, text: str, count: int) -> tuple[float, float]:
    """(text sent → first frame shown in ms, seconds of speech) of one request, waited until done.

    Sent only once the tab has shown no frame for 500 ms, so a late frame of the one before never counts."""
    page.bring_to_front()  # the tab a person would watch: Chromium paces the frames of a tab behind others
    page.wait_for_function(QUIET, timeout=30_000)
    page.evaluate(SPEAK, text)
    page.wait_for_function(ALL_DONE, arg=count, timeout=90_000)
    first = page.evaluate(FIRST_FRAME_MS)
    if first is None:
        raise RuntimeError("no frame was shown")
    end = page.evaluate("[...window.avatarPlayer.requests.values()].at(-1).end")
    return float(first), float(end or 0.0)


def measure_in_browser(stack: RunningStack, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    found: dict[str, Any] = {f"first:{t}": [] for t in TRANSPORTS} | {"load": []}
    found |= {f"cpu:{t}": 0.0 for t in TRANSPORTS} | {f"speech:{t}": 0.0 for t in TRANSPORTS}
    gateway = gateway_process(stack)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tabs = {transport: open_tab(browser, stack, transport) for transport in TRANSPORTS}
        for run in range(runs):
            text = PERSIAN if run % 2 == 0 else ENGLISH
            for transport in (TRANSPORTS if run % 2 == 0 else TRANSPORTS[::-1]):  # neither always goes first
                before = cpu_s(gateway)
                first_ms, speech_s = speak_once(tabs[transport], text, run + 1)
                found[f"cpu:{transport}"] += cpu_s(gateway) - before
                found[f"speech:{transport}"] += speech_s
                found[f"first:{transport}"].append(first_ms)
                found["load"].append(os.getloadavg()[0])
                progress(f"run {run + 1}/{runs} {transport}: first frame {first_ms:.0f} ms")
        found["codecs"] = tabs["webrtc"].evaluate(CODECS)
        found["width"] = tabs["webrtc"].evaluate("document.getElementById('rtc-video').videoWidth")
        stops = []
        page = tabs["webrtc"]
        for run in range(max(1, runs // 2)):
            count = runs + run + 1
            page.bring_to_front()
            page.wait_for_function(QUIET, timeout=30_000)
            page.evaluate(SPEAK, LONG_ENGLISH)
            page.wait_for_function("window.avatarPlayer.rtc.frames > 0 && window.frameTimes.some("
                                   "(t) => t > window.sentAt + 1000)", timeout=60_000)
            stops.append(page.evaluate(INTERRUPT_AND_WATCH, "click"))
            page.wait_for_function(ALL_DONE, arg=count, timeout=30_000)
        found["stops"] = stops
        browser.close()
    return found


def sample_request(seconds: float, size: int) -> list[bytes]:
    """A request's chunks as the lip-sync processor writes them (10 frames, then 12 a chunk), of a shifting
    noise picture: harder to code than a face, so the parts measured on it are upper bounds."""
    writer = FragmentedMp4Writer(size, size, fps=25, audio_rate=24000)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    pcm = (rng.standard_normal(int(seconds * 24000)) * 3000).astype(np.int16)
    chunks, start, frames = [], 0, int(seconds * 25)
    while start < frames:
        end = min(frames, start + (10 if start == 0 else 12))
        video = [np.roll(base, i, axis=0) for i in range(start, end)]
        chunks.append(writer.write(video, pcm[start * 960:end * 960]))
        start = end
    chunks.append(writer.close())
    return chunks


def measure_parts(video_codec: str, size: int, seconds: float = 10.0) -> dict[str, float]:
    """CPU seconds per second of media: demux + AAC decode, the video for ``video_codec``, Opus encode."""
    chunks = sample_request(seconds, size)
    passthrough = video_codec.upper() == "H264"
    media = RequestMedia(passthrough=passthrough)
    started = time.process_time()
    demuxed = [media.demux(chunk, is_last=i == len(chunks) - 1) for i, chunk in enumerate(chunks)]
    demux_s = time.process_time() - started
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=f"video/{video_codec}", clockRate=90000, payloadType=96))
    samples = [sample for part in demuxed for sample in part.video]
    started = time.process_time()
    for index, sample in enumerate([*samples, None]):
        for _, item in media.video(sample):
            if isinstance(item, av.Packet):
                encoder.pack(item)  # what aiortc's sender does with a passed-through access unit
            else:
                item.pts, item.time_base = index * 3600, Fraction(1, 90000)
                encoder.encode(item)
    video_s = time.process_time() - started
    track = PlayoutAudioTrack(PlayoutFeed(Playout(), MediaClock()))
    audio = np.concatenate([part.audio for part in demuxed])
    started = time.process_time()
    for index in range(len(audio) // AUDIO_BLOCK):
        track.encode(AudioBlock(index * AUDIO_BLOCK, audio[index * AUDIO_BLOCK:(index + 1) * AUDIO_BLOCK], False))
    audio_s = time.process_time() - started
    return {"decode": demux_s / seconds, "video": video_s / seconds, "audio": audio_s / seconds}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="sentences per transport (default 6)")
    args = parser.parse_args()
    progress("starting broker, database and the service")
    with service() as (stack, _settings):
        found = measure_in_browser(stack, args.runs)
    codecs = found["codecs"] or {}
    video_codec = str(codecs.get("video", "video/VP8")).split("/")[-1]
    frame_size = found["width"]  # the avatar's frames as the lip-sync processor renders them
    parts = measure_parts(video_codec, frame_size)

    rows = []
    for transport in TRANSPORTS:
        first = found[f"first:{transport}"]
        rows.append([transport.upper() if transport == "mse" else "WebRTC", len(first), statistics.median(first),
                     p(first, 0.95), min(first)])
    load = statistics.median(found["load"])
    print(f"machine: {os.cpu_count()} cores, 1-minute load average during the runs p50 {load:.1f} "
          f"(other work shares them)")
    print(table("text sent → first frame shown in Chromium (ms), one run of the real stack",
                ["transport", "n", "p50", "p95", "min"], rows,
                lambda c: f"{c:.0f}" if isinstance(c, float) else str(c)))
    stops = found["stops"]
    stop_rows = []
    for label, key in (("the peer's flush answered (its POST's response)", "flushAnsweredMs"),
                       ("video: packets received (the gateway's last)", "videoPacketsStopMs"),
                       ("audio: speech packets received", "audioStopMs"),
                       ("video: frames decoded (behind Chromium's A/V sync)", "videoStopMs"),
                       ("audio: energy played (after Chromium's playout buffer)", "energyStopMs")):
        values = [s[key] for s in stops if s.get(key) is not None]
        if values:
            stop_rows.append([label, len(values), statistics.median(values), max(values)])
    print(table("WebRTC interrupt: click → the last media (ms; inbound-rtp sampled every 10 ms)",
                ["what stops", "n", "p50", "max"], stop_rows,
                lambda c: f"{c:.0f}" if isinstance(c, float) else str(c)))
    cpu_rows = []
    for transport in TRANSPORTS:
        speech = found[f"speech:{transport}"]
        cpu_rows.append([f"gateway while a {transport.upper() if transport == 'mse' else 'WebRTC'} tab speaks",
                         100 * found[f"cpu:{transport}"] / speech if speech else float("nan")])
    cpu_rows.append(["  of which fMP4 demux + AAC decode to 48 kHz", 100 * parts["decode"]])
    video_part = (f"H.264 pass-through ({frame_size}x{frame_size}: Annex B + aiortc RTP packing)"
                  if video_codec.upper() == "H264" else f"PyAV H.264 decode + aiortc {video_codec} encode")
    cpu_rows.append([f"  of which {video_part}, 25 fps", 100 * parts["video"]])
    cpu_rows.append(["  of which Opus encode, 48 kHz (the audio track)", 100 * parts["audio"]])
    print(table(f"CPU per session (% of one core per second of speech; browser negotiated {codecs})",
                ["what", "% of a core"], cpu_rows, lambda c: f"{c:.1f}" if isinstance(c, float) else str(c)))


if __name__ == "__main__":
    main()
