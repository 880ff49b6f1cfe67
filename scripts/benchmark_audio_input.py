"""Measures audio input over the WebSocket: audio in → first video chunk, and audio/video drift of long speech.

    python scripts/benchmark_audio_input.py                      # starts broker, database and service
    python scripts/benchmark_audio_input.py --runs 30 --drift-minutes 5
    python scripts/benchmark_audio_input.py --url ws://127.0.0.1:5002/ws/stream   # a running gateway

Everything runs against the whole service started as `make run` starts it (an embedded broker and a
throw-away database), or against a gateway on this machine (``--url``, loopback only).

- **Latency**: one utterance per run (espeak-ng speech at 16 kHz, its leading silence cut so the first chunk
  is speech), sent as 100 ms ``audio_input`` chunks paced in real time, as an agent's TTS streams it. Figure:
  the first chunk sent → the first ``video_chunk`` of that request received, p50 / p95 / max.
- **pipecat** (when the ``[pipecat]`` extra is installed): the same utterances at 24 kHz as ``TTSAudioRawFrame``s
  of 100 ms, 100 ms apart, through ``integrations.pipecat.AvatarVideoService`` in a pipecat pipeline (its own
  test runner); figure: the service's TTFB metric, the first audio frame taken → the first
  ``OutputImageRawFrame`` pushed (decoded, with its audio).
- **LiveKit Agents** (when the ``[livekit]`` extra is installed): the same utterances at 24 kHz, their leading
  silence cut as for the WebSocket figure, as 100 ms ``rtc.AudioFrame``s 100 ms apart pushed into
  ``integrations.livekit.AvatarVideoGenerator`` (one generator for all runs, as an agent keeps one), its iterator
  read as an ``AvatarRunner`` reads it; figure: the first frame pushed → the first ``rtc.VideoFrame`` yielded
  (decoded, RGBA, with its audio after it).
- **Drift**: one long utterance (the speech repeated) streamed in 100 ms chunks, sent ``--drift-speed``
  times faster than real time (the timeline does not depend on the pace; a 20-minute run at 1x takes 20
  minutes). At the end: where the video timeline ends (last chunk's ``pts_ms + duration_ms``) against the
  audio sent, and, decoding the assembled MP4, the offset of its audio track against the sent audio at the
  start and at the end (found by cross-correlation; one clock: the video's 40 ms frames). Drift is the end
  offset minus the start offset (a constant offset, e.g. the AAC encoder's priming, is not drift).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from producers.audio import AUDIBLE_PEAK
from scripts.load_test import require_loopback
from scripts.report_table import table
from tests.support.agent_audio import ENGLISH, PERSIAN, speech_pcm

RATE = 16_000
CHUNK_MS = 100
Connection = websockets.ClientConnection


def speech(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech at RATE without its leading silence (so the first chunk sent is audible)."""
    pcm = speech_pcm(RATE, text, voice)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) >= 104)  # -50 dBFS, the gateway's audible threshold
    return pcm[int(loud[0]) :] if len(loud) else pcm


def pieces(pcm: np.ndarray) -> list[bytes]:
    step = RATE * CHUNK_MS // 1000
    return [pcm[i : i + step].astype("<i2").tobytes() for i in range(0, len(pcm), step)]


def audio_message(chunk: bytes) -> str:
    return json.dumps({"type": "audio_input", "sample_rate": RATE, "data": base64.b64encode(chunk).decode()})


async def recv(ws: Connection, timeout_s: float = 60) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    if message["type"] == "error":
        raise RuntimeError(f"the gateway refused: {message}")
    return message


async def open_session(url: str) -> Connection:
    ws = await websockets.connect(url, max_size=64 * 1024 * 1024)
    await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": "sample"}))
    ready = await recv(ws)
    assert ready["type"] == "session_ready", ready
    return ws


class Receiver:
    """Reads the connection in the background: the request id, its first chunk's arrival, all its chunks."""

    def __init__(self, ws: Connection) -> None:
        self.ws = ws
        self.request_id: str | None = None
        self.first_at: float | None = None
        self.chunks: list[dict[str, Any]] = []
        self.done = asyncio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            message = await recv(self.ws)
            if message["type"] == "request_accepted":
                self.request_id = message["request_id"]
            elif message["type"] == "video_chunk" and message["request_id"] == self.request_id:
                if self.first_at is None:
                    self.first_at = time.perf_counter()
                self.chunks.append(message)
                if message["is_last"]:
                    self.done.set()


async def stream_utterance(ws: Connection, audio: list[bytes], speed: float = 1.0) -> tuple[float, Receiver]:
    """Send one utterance paced at ``speed`` x real time, then audio_end; (first chunk sent at, its receiver)."""
    receiver = Receiver(ws)
    task = asyncio.create_task(receiver.run())
    started = time.perf_counter()
    for index, chunk in enumerate(audio):
        await asyncio.sleep(max(0.0, started + index * CHUNK_MS / 1000 / speed - time.perf_counter()))
        await ws.send(audio_message(chunk))
    await ws.send(json.dumps({"type": "audio_end"}))
    await asyncio.wait_for(receiver.done.wait(), 600)
    task.cancel()
    return started, receiver


async def measure_pipecat(url: str, runs: int) -> list[float]:
    from loguru import logger
    from pipecat.frames.frames import MetricsFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
    from pipecat.metrics.metrics import TTFBMetricsData
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.tests.utils import SleepFrame, run_test

    from integrations.pipecat import AvatarVideoService

    logger.remove()  # pipecat logs every pipeline step at DEBUG: only warnings here
    logger.add(sys.stderr, level="WARNING")
    rate = 24_000
    utterances = [speech_pcm(rate, text, voice)[: 2 * rate] for text, voice in [(ENGLISH, "en-us"), (PERSIAN, "fa")]]
    figures = []
    for run in range(runs + 1):  # the first is a warm-up
        frames: list[Any] = [TTSStartedFrame()]
        pcm = utterances[run % 2]
        for start in range(0, len(pcm), rate // 10):
            frames += [TTSAudioRawFrame(audio=pcm[start : start + rate // 10].astype("<i2").tobytes(),
                                        sample_rate=rate, num_channels=1), SleepFrame(sleep=CHUNK_MS / 1000)]
        down, _up = await run_test(AvatarVideoService(url=url, avatar_id="sample"),
                                   frames_to_send=[*frames, TTSStoppedFrame()], start_timeout=30,
                                   pipeline_params=PipelineParams(enable_metrics=True))
        ttfb = [d.value for f in down if isinstance(f, MetricsFrame) for d in f.data
                if isinstance(d, TTFBMetricsData) and d.value > 0]
        if run > 0:
            figures.append(ttfb[0] * 1000)
            print(f"  … pipecat run {run}/{runs}: {figures[-1]:.0f} ms", file=sys.stderr, flush=True)
    return figures


async def first_video_at(generator: Any) -> float | None:
    """Reads a LiveKit generator as the AvatarRunner does, up to the segment's end: when its first video frame came."""
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    first_at = None
    async for item in generator:
        if isinstance(item, rtc.VideoFrame) and first_at is None:
            first_at = time.perf_counter()
        if isinstance(item, AudioSegmentEnd):
            break
    return first_at


async def measure_livekit(url: str, runs: int) -> list[float]:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from integrations.livekit import AvatarVideoGenerator

    rate = 24_000
    spoken = [speech_pcm(rate, text, voice) for text, voice in [(ENGLISH, "en-us"), (PERSIAN, "fa")]]
    audible = [int(np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)[0]) for pcm in spoken]
    utterances = [pcm[first : first + 2 * rate] for pcm, first in zip(spoken, audible, strict=True)]
    generator = AvatarVideoGenerator(url=url, avatar_id="sample")
    await generator.start()
    figures = []
    try:
        for run in range(runs + 1):  # the first is a warm-up
            taker = asyncio.create_task(first_video_at(generator))
            pcm, started = utterances[run % 2], time.perf_counter()
            for start in range(0, len(pcm), rate // 10):
                piece = pcm[start : start + rate // 10].astype("<i2").tobytes()
                await generator.push_audio(rtc.AudioFrame(piece, rate, 1, len(piece) // 2))
                await asyncio.sleep(CHUNK_MS / 1000)
            await generator.push_audio(AudioSegmentEnd())
            first_at = await asyncio.wait_for(taker, 60)
            if run > 0 and first_at is not None:
                figures.append((first_at - started) * 1000)
                print(f"  … livekit run {run}/{runs}: {figures[-1]:.0f} ms", file=sys.stderr, flush=True)
    finally:
        await generator.aclose()
    return figures


async def measure_latency(url: str, runs: int) -> list[float]:
    texts = [(ENGLISH, "en-us"), (PERSIAN, "fa")]
    utterances = [pieces(speech(text, voice)[: 2 * RATE]) for text, voice in texts]  # 2 s each
    ws = await open_session(url)
    figures = []
    try:
        await stream_utterance(ws, utterances[0])  # warm-up (first encoder, first topic assignment)
        for run in range(runs):
            sent_at, receiver = await stream_utterance(ws, utterances[run % 2])
            assert receiver.first_at is not None
            figures.append((receiver.first_at - sent_at) * 1000)
            print(f"  … run {run + 1}/{runs}: {figures[-1]:.0f} ms", file=sys.stderr, flush=True)
    finally:
        await ws.close()
    return figures


def decoded_audio(mp4: bytes) -> tuple[np.ndarray, int, float]:
    """The MP4's audio track as float mono, its rate, and the video track's duration (s)."""
    with av.open(io.BytesIO(mp4), mode="r", format="mp4") as container:
        rate = container.streams.audio[0].rate
        samples, video_end, first_audio_time = [], 0.0, None
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.AudioFrame):
                if first_audio_time is None:
                    first_audio_time = float(frame.time or 0.0)
                samples.append(frame.to_ndarray().mean(axis=0))
            elif isinstance(frame, av.VideoFrame):
                video_end = max(video_end, float(frame.time or 0.0) + 0.04)
    audio = np.concatenate(samples).astype(np.float32)
    lead = round((first_audio_time or 0.0) * rate)  # the track's own start offset, kept on the timeline
    return np.concatenate([np.zeros(max(lead, 0), np.float32), audio]), rate, video_end


def offset_ms(sent: np.ndarray, played: np.ndarray, at_s: float, window_s: float = 2.0, search_ms: int = 200) -> float:
    """How late ``played`` carries the sent audio around ``at_s`` (ms; positive = later), by cross-correlation."""
    start, length, reach = int(at_s * RATE), int(window_s * RATE), RATE * search_ms // 1000
    reference = sent[start : start + length]
    segment = played[max(0, start - reach) : start + length + reach]
    correlation = np.correlate(segment, reference, mode="valid")
    return (int(np.argmax(correlation)) - (start - max(0, start - reach))) * 1000 / RATE


async def measure_drift(url: str, minutes: float, speed: float) -> dict[str, float]:
    one = speech(ENGLISH, "en-us")
    repeats = int(np.ceil(minutes * 60 * RATE / len(one)))
    long_speech = np.tile(one, repeats)[: int(minutes * 60 * RATE)]
    ws = await open_session(url)
    try:
        _sent_at, receiver = await stream_utterance(ws, pieces(long_speech), speed)
    finally:
        await ws.close()
    sent_s = len(long_speech) / RATE
    last = receiver.chunks[-1]
    mp4 = b"".join(base64.b64decode(c["data"]) for c in sorted(receiver.chunks, key=lambda c: c["seq"]))
    played, rate, video_s = decoded_audio(mp4)
    if rate != RATE:
        raise RuntimeError(f"the MP4's audio is at {rate} Hz, expected {RATE}")
    reference = long_speech.astype(np.float32) / 32768.0
    start_offset = offset_ms(reference, played, 1.0)
    end_offset = offset_ms(reference, played, sent_s - 3.0)
    return {"audio sent (s)": sent_s, "video timeline end (s)": (last["pts_ms"] + last["duration_ms"]) / 1000,
            "MP4 video track (s)": video_s, "MP4 audio track (s)": len(played) / rate,
            "audio offset at start (ms)": start_offset, "audio offset at end (ms)": end_offset,
            "drift at end (ms)": end_offset - start_offset}


@contextmanager
def own_stack() -> Iterator[str]:
    """Broker, a throw-away database and the whole service, as the tests start them; removed after."""
    from infra.broker import EmbeddedBroker, free_port
    from infra.migrations import throwaway_database
    from tests.integration.stack import start_stack, stop_stack

    broker = EmbeddedBroker(free_port()).start()
    try:
        with throwaway_database("avatar_audio_bench", embedded_dir="bench-pg") as database:
            print("  … starting broker, database and the service", file=sys.stderr, flush=True)
            stack = start_stack(broker.bootstrap, database, free_port())
            try:
                yield stack.ws
            finally:
                stop_stack(stack)
    finally:
        broker.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(latency: list[float], pipecat: list[float], livekit: list[float], drift: dict[str, float] | None,
           minutes: float, speed: float) -> str:
    rows = [["audio in (100 ms chunks) → first video chunk", len(latency), statistics.median(latency),
             percentile(latency, 0.95), max(latency)]]
    if pipecat:
        rows.append(["pipecat: first TTS audio → first image frame", len(pipecat), statistics.median(pipecat),
                     percentile(pipecat, 0.95), max(pipecat)])
    if livekit:
        rows.append(["LiveKit: first audio pushed → first video frame", len(livekit), statistics.median(livekit),
                     percentile(livekit, 0.95), max(livekit)])
    parts = [table("Audio input over the WebSocket (ms)", ["figure", "runs", "p50", "p95", "max"], rows,
                   lambda c: f"{c:.0f}" if isinstance(c, float) else str(c))]
    if drift is not None:
        title = f"Drift: {minutes:g} min of speech streamed in 100 ms chunks at {speed:g}x real time"
        parts.append(table(title, ["figure", "value"], [[name, value] for name, value in drift.items()],
                           lambda c: f"{c:.3f}" if isinstance(c, float) else str(c)))
        per_20_min = drift["drift at end (ms)"] * 20 / minutes
        parts.append(f"drift extrapolated linearly to 20 minutes: {per_20_min:.1f} ms (target ≤ 40 ms)")
    return "\n\n".join(parts)


async def run(url: str, args: argparse.Namespace) -> str:
    latency = await measure_latency(url, args.runs)
    pipecat = await measure_pipecat(url, args.runs) if args.pipecat and _has("pipecat", "pipecat") else []
    livekit = await measure_livekit(url, args.runs) if args.livekit and _has("livekit.agents", "livekit") else []
    drift = None
    if args.drift_minutes > 0:
        print(f"  … drift: {args.drift_minutes:g} min of speech at {args.drift_speed:g}x", file=sys.stderr, flush=True)
        drift = await measure_drift(url, args.drift_minutes, args.drift_speed)
    return report(latency, pipecat, livekit, drift, args.drift_minutes, args.drift_speed)


def _has(module: str, extra: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        print(f"  … {module} is not installed (the [{extra}] extra): its row is left out", file=sys.stderr)
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway's /ws/stream (loopback only); default: start a stack")
    parser.add_argument("--runs", type=int, default=20, help="utterances timed (default 20)")
    parser.add_argument("--no-pipecat", dest="pipecat", action="store_false", help="skip the pipecat figure")
    parser.add_argument("--no-livekit", dest="livekit", action="store_false", help="skip the LiveKit figure")
    parser.add_argument("--drift-minutes", type=float, default=2.0, help="length of the drift run (0: skip)")
    parser.add_argument("--drift-speed", type=float, default=4.0, help="times real time the drift audio is sent")
    args = parser.parse_args()
    if args.url:
        print(asyncio.run(run(require_loopback(args.url), args)))
        return
    with own_stack() as url:
        print(asyncio.run(run(url, args)))


if __name__ == "__main__":
    main()
