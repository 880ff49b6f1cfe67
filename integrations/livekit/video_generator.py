"""A livekit-agents avatar ``VideoGenerator`` backed by this service: the agent's audio in, lip-synced frames out.

Given to livekit-agents' ``AvatarRunner``, it streams every ``rtc.AudioFrame`` the agent speaks to the service's
WebSocket (one utterance per audio segment; ``AudioSegmentEnd`` sends ``audio_end``) through
``integrations.avatar_link``, and its iterator yields, for every 40 ms video frame of the answer, an RGBA
``rtc.VideoFrame`` followed by the ``rtc.AudioFrame`` that frame shows: the agent's own audio, sample for sample,
so the runner's AV synchronizer plays one clock; an ``AudioSegmentEnd`` follows an utterance's last frame (the
runner then tells the agent its speech has played). ``clear_buffer`` interrupts the utterance in the service and
drops every frame not yielded yet. Without the service (unreachable, or the connection lost) the agent keeps its
voice: its audio frames come back unchanged with their ``AudioSegmentEnd``, ``last_error`` says why the face is
missing, and each new segment tries the service again (at most every ``retry_interval_s``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from integrations.avatar_link import AvatarLink, AvatarUnavailable, SyncedFrame

log = logging.getLogger(__name__)
Output = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd
# Frames decoded ahead of the runner, which takes them in real time while the service renders ~14x faster: a
# bound keeps a long answer from holding all its frames (1 MB each in RGBA) in memory. When it is full the link
# stops reading; the gateway holds the encoded chunks (WS_MAX_PENDING_MESSAGES of them, minutes of video).
AHEAD_FRAMES = 50  # 2 s
Queued = tuple[str | None, Output]  # (the request it belongs to, None for the agent's own audio passed through)


class Segment(enum.Enum):
    """What happens to the audio segment the agent is pushing."""

    NONE = "none"  # no segment open
    FACE = "face"  # sent to the service; its frames come back from it
    VOICE = "voice"  # passed through unchanged: the service is not there


def video_frame(frame: SyncedFrame) -> rtc.VideoFrame:
    """A decoded RGBA image as LiveKit's video frame."""
    height, width = frame.image.shape[:2]
    return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, frame.image.tobytes())


def audio_frame(frame: SyncedFrame) -> rtc.AudioFrame:
    """The audio a video frame shows as LiveKit's audio frame (PCM16 mono)."""
    return rtc.AudioFrame(frame.audio, frame.sample_rate, 1, len(frame.audio) // 2)


class AvatarVideoGenerator(VideoGenerator):
    """The avatar service's face for an ``AvatarRunner`` (``AvatarOptions``: the avatar's size, 25 fps, the TTS's
    rate, mono)."""

    def __init__(self, *, url: str = "ws://127.0.0.1:5002/ws/stream", avatar_id: str = "sample",
                 token: str | None = None, retry_interval_s: float = 10.0) -> None:
        self._link = AvatarLink(url=url, avatar_id=avatar_id, token=token, pixel_format="rgba",
                                on_frame=self._on_frame, on_error=self._on_error, on_ended=self._on_ended)
        self.retry_interval_s = retry_interval_s
        self.last_error: str | None = None  # why the face is missing, or the service's last error
        self._out: asyncio.Queue[Queued | None] = asyncio.Queue(2 * AHEAD_FRAMES + 2)  # None: closed
        self._receiver: asyncio.Task[None] | None = None
        self._segment = Segment.NONE
        self._ends_owed = 0  # segments ended here whose AudioSegmentEnd comes after their last frame
        self._last_attempt = -float("inf")

    @property
    def session_id(self) -> str | None:
        return self._link.session_id

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def start(self) -> None:
        """Connects now rather than at the first audio; raises ``AvatarUnavailable`` saying why it could not."""
        self._last_attempt = time.monotonic()
        await self._link.connect()
        self._receiver = asyncio.create_task(self._link.receive(), name="avatar-receive")

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            await self._end_segment()
            return
        if self._segment is Segment.NONE:
            self._segment = Segment.FACE if await self._ensure_connected() else Segment.VOICE
        if self._segment is Segment.FACE and self._link.connected:
            await self._link.send_audio(bytes(frame.data), frame.sample_rate, frame.num_channels)
        else:
            self._segment = Segment.VOICE
            await self._out.put((None, frame))

    async def _end_segment(self) -> None:
        if self._segment is Segment.FACE and self._link.connected:
            self._ends_owed += 1
            await self._link.end_utterance()
        elif self._segment is Segment.VOICE:
            await self._out.put((None, AudioSegmentEnd()))
        # An end without audio before it is no segment: ending one would end the next too early.
        self._segment = Segment.NONE

    async def _ensure_connected(self) -> bool:
        """Whether the service is there for a new segment (tried again, not more often than the interval)."""
        if self._link.connected:
            return True
        if time.monotonic() - self._last_attempt < self.retry_interval_s:
            return False
        try:
            await self.start()
        except AvatarUnavailable as error:
            self.last_error = f"{error}; speaking without a face"
            log.warning(self.last_error)
            return False
        return True

    async def clear_buffer(self) -> None:
        """Barge-in: nothing queued is yielded any more and the service stops the utterance."""
        closed = self._drain()
        self._segment = Segment.NONE
        self._ends_owed = 0
        if self._link.connected:
            await self._link.interrupt()  # a frame the link was handing over meanwhile is dropped by _stream
        if closed:
            self._out.put_nowait(None)

    def _drain(self) -> bool:
        """Empties the queue; whether the end of the stream was in it."""
        closed = False
        while not self._out.empty():
            closed = self._out.get_nowait() is None or closed
        return closed

    def __aiter__(self) -> AsyncIterator[Output]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Output]:
        while (item := await self._out.get()) is not None:
            request_id, output = item
            if request_id is None or not self._link.is_interrupted(request_id):
                yield output

    async def aclose(self) -> None:
        """Ends the session with the service and the iteration."""
        if self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
        await self._link.close()
        self._drain()
        self._out.put_nowait(None)

    async def _on_frame(self, frame: SyncedFrame) -> None:
        await self._out.put((frame.request_id, video_frame(frame)))
        await self._out.put((frame.request_id, audio_frame(frame)))

    async def _on_ended(self, request_id: str | None) -> None:
        if self._ends_owed > 0:
            self._ends_owed -= 1
            await self._out.put((request_id, AudioSegmentEnd()))
        elif self._segment is Segment.FACE:  # the segment being pushed was refused: the rest of it is voice
            self._segment = Segment.VOICE

    async def _on_error(self, why: str) -> None:
        if self._link.connected:  # the service's own error, e.g. silent_audio
            self.last_error = why
            log.warning(why)
            return
        self.last_error = f"{why}; speaking without a face"
        log.warning(self.last_error)
        self._last_attempt = time.monotonic()
        if self._ends_owed > 0:  # their last frames will not come: the agent must not wait for them
            self._ends_owed = 0
            await self._out.put((None, AudioSegmentEnd()))
