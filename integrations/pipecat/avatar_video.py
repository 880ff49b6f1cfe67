"""A pipecat FrameProcessor that gives a voice agent this service's face: its TTS audio in, lip-synced frames out.

Placed after the TTS, it streams each ``TTSAudioRawFrame`` to the service's WebSocket as binary ``PCM1`` frames
(an utterance per TTS response, ended by ``TTSStoppedFrame``), and pushes downstream, for every 40 ms video frame
of the lip-synced answer, an ``OutputImageRawFrame`` (RGB, shown in step with the audio) followed by the
``TTSAudioRawFrame`` of the audio that frame shows. That audio is the agent's own, exactly as sent, paired with its
frame by ``integrations.avatar_link`` (the WebSocket client the framework adapters share), and each image goes
out as soon as it is decoded. The TTS frames themselves are not passed on, so the transport
plays one track, in sync with the face. An
``InterruptionFrame`` interrupts the utterance in the service and drops every frame of it not pushed yet. The
time from an utterance's first audio to its first image is pipecat's TTFB metric of this processor. Without
the service (unreachable at start, or the connection lost) the agent keeps its voice: the TTS frames pass
through unchanged and an ``ErrorFrame`` says why the face is missing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from integrations.avatar_link import AvatarLink, AvatarUnavailable, SyncedFrame

log = logging.getLogger(__name__)
END_WAIT_S = 60.0  # at EndFrame, the longest wait for the videos still being rendered


class AvatarVideoService(FrameProcessor):
    """The avatar service's face for a pipecat pipeline (after the TTS, before the output transport)."""

    def __init__(self, *, url: str = "ws://127.0.0.1:5002/ws/stream", avatar_id: str = "sample",
                 token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._link = AvatarLink(url=url, avatar_id=avatar_id, token=token, on_frame=self._push_av,
                                on_error=self._on_link_error)
        self._receiver: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self._link.url

    @property
    def session_id(self) -> str | None:
        return self._link.session_id

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._connect()
        elif isinstance(frame, TTSAudioRawFrame) and self._link.connected:
            if await self._link.send_audio(frame.audio, frame.sample_rate, frame.num_channels):
                await self.start_ttfb_metrics()
            return  # it comes back with its frames
        elif isinstance(frame, TTSStoppedFrame):
            await self._link.end_utterance()
        elif isinstance(frame, InterruptionFrame):
            await self._link.interrupt()
        elif isinstance(frame, EndFrame):
            await self._link.end_utterance()
            await self._wait_for_videos()
            await self._disconnect()
        elif isinstance(frame, CancelFrame):
            await self._disconnect()
        await self.push_frame(frame, direction)

    async def _connect(self) -> None:
        try:
            await self._link.connect()
        except AvatarUnavailable as error:
            await self.push_error(f"{error}; speaking without a face")
            return
        self._receiver = self.create_task(self._link.receive(), name="avatar-receive")

    async def _disconnect(self) -> None:
        if self._receiver is not None:
            await self.cancel_task(self._receiver)
            self._receiver = None
        await self._link.close()

    async def _on_link_error(self, why: str) -> None:
        if self._link.connected:  # the service's own error (e.g. silent_audio), downstream with the frames
            await self.push_frame(ErrorFrame(why))
        else:  # the connection is lost: the TTS frames pass through from now on
            await self.push_error(f"{why}; speaking without a face")

    async def _wait_for_videos(self) -> None:
        try:
            await asyncio.wait_for(self._link.idle.wait(), END_WAIT_S)
        except TimeoutError:
            log.warning("the avatar's last video did not finish before the pipeline ended")

    async def _push_av(self, frame: SyncedFrame) -> None:
        """The image, then the audio it shows."""
        height, width = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = True  # shown when the audio before it has played
        if frame.index == 0:
            await self.stop_ttfb_metrics()
        await self.push_frame(image)
        await self.push_frame(TTSAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=1))
