"""The aiortc video and audio tracks of a WebRTC peer: they pace a Playout's media against one wall clock.

aiortc pulls ``recv()`` as fast as it returns, so each track sleeps until its next frame or block is due.
Both count seconds from the same origin (``MediaClock``), so the RTP timestamps and the RTCP sender
reports of the two tracks describe one clock and the browser keeps them in sync. A track with nothing to
send waits: the browser holds the last frame and plays silence, and no packet flows (the tests see an
interrupt as packets stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from gateway.webrtc.playout import AUDIO_RATE, VIDEO_CLOCK, Playout

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

    def __init__(self, playout: Playout[VideoFrame], clock: MediaClock) -> None:
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
    """Sends each queued frame when the clock reaches it; a frame already late is skipped for the newest due."""

    kind = "video"

    def __init__(self, feed: PlayoutFeed) -> None:
        super().__init__()
        self.feed = feed
        self._wake = feed.event()
        self.frames_sent = 0
        self.frames_skipped = 0

    async def recv(self) -> VideoFrame:
        playout, clock = self.feed.playout, self.feed.clock
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            due = playout.due_video(clock.now())
            if due is not None:
                frame = due.frame
                assert isinstance(frame, VideoFrame)
                frame.pts = due.pts
                frame.time_base = VIDEO_TIME_BASE
                self.frames_sent += 1
                self.frames_skipped += due.skipped
                return frame
            at = playout.next_video_at()
            await _wait(self._wake, None if at is None else max(0.0, at - clock.now()))


class PlayoutAudioTrack(MediaStreamTrack):
    """Sends the queued audio in 20 ms blocks (48 kHz mono s16), each when the clock reaches it."""

    kind = "audio"

    def __init__(self, feed: PlayoutFeed) -> None:
        super().__init__()
        self.feed = feed
        self._wake = feed.event()
        self.blocks_sent = 0

    async def recv(self) -> AudioFrame:
        playout, clock = self.feed.playout, self.feed.clock
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            block = playout.next_audio()
            if block is None:
                await _wait(self._wake, None)
                continue
            wait = block.release_s - clock.now()
            if wait > 0.001:
                await _wait(self._wake, wait)  # woken early by a flush: look again
                continue
            playout.take_audio(block)
            frame = AudioFrame.from_ndarray(np.ascontiguousarray(block.pcm.reshape(1, -1)), format="s16",
                                            layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = block.start
            frame.time_base = AUDIO_TIME_BASE
            self.blocks_sent += 1
            return frame
