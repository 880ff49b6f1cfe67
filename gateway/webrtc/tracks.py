"""The aiortc video and audio tracks of a WebRTC peer: they pace a Playout's media against one wall clock.

aiortc pulls ``recv()`` as fast as it returns, so each track sleeps until its next frame or block is due.
Both count seconds from the same origin (``MediaClock``), so the RTP timestamps and the RTCP sender
reports of the two tracks describe one clock and the browser keeps them in sync. With nothing to show the
video track waits (the browser holds the last frame); the audio track sends silence (playout.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.packet import Packet
from av.video.frame import VideoFrame

from gateway.webrtc.playout import AUDIO_RATE, VIDEO_CLOCK, AudioBlock, Playout

VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)


class MediaClock:
    """Seconds since the peer started, on the monotonic clock: the one clock of its playout and tracks."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin


class PlayoutFeed:
    """A Playout, its clock, and the wake-ups of the tracks that drain it (one event per track)."""

    def __init__(self, playout: Playout[VideoFrame | Packet], clock: MediaClock) -> None:
        self.playout = playout
        self.clock = clock
        self._events: list[asyncio.Event] = []

    def event(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def changed(self) -> None:
        """Something was queued or flushed: every track looks again."""
        for event in self._events:
            event.set()


async def _wait(event: asyncio.Event, timeout_s: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


class PlayoutVideoTrack(MediaStreamTrack):
    """Sends each queued frame when the clock reaches it: a decoded frame (aiortc encodes it) or an H.264
    access unit passed through (an ``av.Packet``: aiortc only packetises it). A decoded frame already late
    is skipped for the newest due (the playout's ``skip_late``)."""

    kind = "video"

    def __init__(self, feed: PlayoutFeed) -> None:
        super().__init__()
        self.feed = feed
        self._wake = feed.event()
        self.frames_sent = 0
        self.frames_skipped = 0

    async def recv(self) -> VideoFrame | Packet:
        playout, clock = self.feed.playout, self.feed.clock
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            due = playout.due_video(clock.now())
            if due is not None:
                frame = due.frame
                assert isinstance(frame, VideoFrame | Packet)
                frame.pts = due.pts
                frame.time_base = VIDEO_TIME_BASE
                self.frames_sent += 1
                self.frames_skipped += due.skipped
                return frame
            at = playout.next_video_at()
            await _wait(self._wake, None if at is None else max(0.0, at - clock.now()))


def _opus_encoder() -> AudioCodecContext:
    context = av.CodecContext.create("libopus", "w")
    assert isinstance(context, AudioCodecContext)
    context.sample_rate = AUDIO_RATE
    context.layout = "mono"
    context.format = "s16"
    context.bit_rate = 48_000
    context.time_base = AUDIO_TIME_BASE
    # DTX: after ~200 ms of silence each 20 ms packet is 1 byte (measured), so an idle peer costs little.
    context.options = {"application": "voip", "frame_duration": "20", "dtx": "1"}
    context.open()
    return context


class PlayoutAudioTrack(MediaStreamTrack):
    """Sends a 20 ms block every 20 ms of the clock: the queued audio, or silence; encoded to Opus here.

    The track hands aiortc Opus packets, not PCM: aiortc then only packs them, on the event loop, stamped
    with the block's own time. Given PCM, it would resample and encode each block on its shared thread pool,
    behind the video encoder's frames (measured on a loaded 2-core machine: blocks up to 600 ms late, and
    Chromium's audio jitter buffer, and with it the video, grew to 0.7 s). One 20 ms block costs ~0.25 ms.
    """

    kind = "audio"

    def __init__(self, feed: PlayoutFeed) -> None:
        super().__init__()
        self.feed = feed
        self._wake = feed.event()
        self._encoder = _opus_encoder()
        self.blocks_sent = 0
        self.speech_blocks_sent = 0

    async def recv(self) -> Packet:
        playout, clock = self.feed.playout, self.feed.clock
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            block = playout.next_audio(clock.now())
            wait = block.release_s - clock.now()
            if wait > 0.001:
                await _wait(self._wake, wait)  # woken early by new audio or a flush: take the block again
                continue
            playout.take_audio(block)
            packet = self.encode(block)
            if packet is None:
                continue
            self.blocks_sent += 1
            self.speech_blocks_sent += not block.silent
            return packet

    def encode(self, block: AudioBlock) -> Packet | None:
        frame = AudioFrame.from_ndarray(np.ascontiguousarray(block.pcm.reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = block.start
        frame.time_base = AUDIO_TIME_BASE
        packets = self._encoder.encode(frame)  # libopus gives one packet per 20 ms frame, at once
        if not packets:
            return None
        packet = packets[-1]
        packet.pts = block.start  # the block's place on the clock (the encoder's own pts lead by its look-ahead)
        packet.time_base = AUDIO_TIME_BASE
        return packet
