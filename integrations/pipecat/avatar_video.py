"""A pipecat FrameProcessor that gives a voice agent this service's face: its TTS audio in, lip-synced frames out.

Placed after the TTS, it streams each ``TTSAudioRawFrame`` to the service's WebSocket as binary ``PCM1`` frames
(an utterance per TTS response, ended by ``TTSStoppedFrame``), and pushes downstream, for every 40 ms video frame
of the lip-synced answer, an ``OutputImageRawFrame`` (RGB, shown in step with the audio) followed by the
``TTSAudioRawFrame`` of the audio that frame shows. That audio is the agent's own, exactly as sent: the service
cuts an utterance by a fixed rule (``producers.audio.Utterance``: leading silence dropped, whole 40 ms frames),
so a mirror of that cut here knows the samples of every video frame without decoding the video's AAC, and
each image goes out as soon as it is decoded. The TTS frames themselves are not passed on, so the transport
plays one track, in sync with the face. An
``InterruptionFrame`` interrupts the utterance in the service and drops every frame of it not pushed yet. The
time from an utterance's first audio to its first image is pipecat's TTFB metric of this processor. Without
the service (unreachable at start, or the connection lost) the agent keeps its voice: the TTS frames pass
through unchanged and an ``ErrorFrame`` says why the face is missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import av
import numpy as np
import websockets
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

from consumers.fmp4_frames import AvFrame, Fmp4FrameDecoder
from producers.audio import SUPPORTED_RATES, AudioError, Utterance, UtteranceTarget, pcm16_samples
from schemas.websocket import pack_audio_frame

log = logging.getLogger(__name__)
RESAMPLE_RATE = 24_000  # for a TTS whose rate the service does not take (8 kHz, 44.1 kHz, ...)
END_WAIT_S = 60.0  # at EndFrame, the longest wait for the videos still being rendered


class AvatarVideoService(FrameProcessor):
    """The avatar service's face for a pipecat pipeline (after the TTS, before the output transport)."""

    def __init__(self, *, url: str = "ws://127.0.0.1:5002/ws/stream", avatar_id: str = "sample",
                 token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url if token is None else f"{url}?token={token}"
        self.avatar_id = avatar_id
        self._ws: websockets.ClientConnection | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._speaking = False  # an utterance is open in the service
        self._accepted: asyncio.Queue[str] = asyncio.Queue()
        self._decoders: dict[str, Fmp4FrameDecoder] = {}  # requests whose video is still coming
        self._interrupted: set[str] = set()
        # Utterances opened here and answered by the service: an interrupt covers those opened before it,
        # also one whose request_accepted is still on its way.
        self._opened = 0
        self._answered = 0
        self._interrupted_upto = 0
        self._mirror: Utterance | None = None  # the service's cut of the utterance being sent
        # Utterances opened and not answered yet → their timeline audio and rate; the one being sent.
        self._timelines: dict[int, tuple[bytearray, int]] = {}
        self._sending: tuple[bytearray, int] = (bytearray(), RESAMPLE_RATE)
        self._timeline_of: dict[str, tuple[bytearray, int]] = {}  # request → (its timeline, its rate)
        self._resampler: av.AudioResampler | None = None
        self._all_done = asyncio.Event()
        self._all_done.set()
        self.session_id: str | None = None

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._connect()
        elif isinstance(frame, TTSAudioRawFrame) and self._ws is not None:
            await self._send_audio(frame)
            return  # it comes back with its frames
        elif isinstance(frame, TTSStoppedFrame):
            await self._end_utterance()
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
        elif isinstance(frame, EndFrame):
            await self._end_utterance()
            await self._wait_for_videos()
            await self._disconnect()
        elif isinstance(frame, CancelFrame):
            await self._disconnect()
        await self.push_frame(frame, direction)

    async def _connect(self) -> None:
        try:
            ws = await websockets.connect(self.url, max_size=None)
            await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": self.avatar_id}))
            ready = json.loads(await ws.recv())
        except (OSError, websockets.WebSocketException) as error:
            await self.push_error(f"avatar service unreachable at {self.url}: {error}; speaking without a face")
            return
        if ready.get("type") != "session_ready":
            await ws.close()
            await self.push_error(f"the avatar service refused avatar '{self.avatar_id}': {ready.get('message')}")
            return
        self._ws = ws
        self.session_id = ready["session_id"]
        self._receiver = self.create_task(self._receive(), name="avatar-receive")

    async def _send(self, data: str | bytes) -> None:
        """One message to the service; a lost connection leaves the agent its voice and says so."""
        if self._ws is None:
            return
        try:
            await self._ws.send(data)
        except websockets.ConnectionClosed as closed:
            self._ws = None
            self._all_done.set()
            await self.push_error(f"the avatar service closed the connection ({closed}); speaking without a face")

    async def _disconnect(self) -> None:
        if self._receiver is not None:
            await self.cancel_task(self._receiver)
            self._receiver = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _send_audio(self, frame: TTSAudioRawFrame) -> None:
        rate, pcm = self._pcm_of(frame)
        if not self._speaking:
            self._speaking = True
            self._opened += 1
            self._all_done.clear()
            self._mirror = Utterance(UtteranceTarget("mirror", "mirror", self.avatar_id, rate), max_samples=2**62)
            self._sending = self._timelines[self._opened] = (bytearray(), rate)
            await self.start_ttfb_metrics()
        await self._send(pack_audio_frame(rate, pcm))
        self._mirror_cut(lambda mirror: mirror.add(pcm16_samples(pcm)))

    def _mirror_cut(self, cut: Any) -> None:
        """The segments the service cuts from what was sent, kept as the utterance's timeline audio."""
        if self._mirror is None:
            return
        try:
            for segment in cut(self._mirror):
                self._sending[0].extend(segment.pcm16)
        except AudioError:  # the service refuses the same audio and says so (an ErrorFrame)
            pass

    def _pcm_of(self, frame: TTSAudioRawFrame) -> tuple[int, bytes]:
        """The frame's audio as PCM16 mono at a rate the service takes (resampled only when it must be)."""
        if frame.sample_rate in SUPPORTED_RATES and frame.num_channels == 1:
            return frame.sample_rate, frame.audio
        layout = "mono" if frame.num_channels == 1 else "stereo"
        samples = np.frombuffer(frame.audio, np.int16).reshape(1, -1)
        source = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
        source.sample_rate = frame.sample_rate
        self._resampler = self._resampler or av.AudioResampler(format="s16", layout="mono", rate=RESAMPLE_RATE)
        out = b"".join(bytes(part.planes[0])[: part.samples * 2] for part in self._resampler.resample(source))
        return RESAMPLE_RATE, out

    async def _end_utterance(self) -> None:
        if self._speaking and self._ws is not None:
            self._speaking = False
            await self._send(json.dumps({"type": "audio_end"}))
            self._mirror_cut(lambda mirror: mirror.end())
            self._mirror = None

    async def _interrupt(self) -> None:
        """Barge-in: the service stops the utterance; nothing of it is pushed any more."""
        self._speaking = False
        self._mirror = None
        self._interrupted.update(self._decoders)
        self._interrupted_upto = self._opened
        self._decoders.clear()
        self._all_done.set()
        await self._send(json.dumps({"type": "interrupt"}))

    async def _wait_for_videos(self) -> None:
        try:
            await asyncio.wait_for(self._all_done.wait(), END_WAIT_S)
        except TimeoutError:
            log.warning("the avatar's last video did not finish before the pipeline ended")

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._on_message(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        # Not cancelled by _disconnect: the service went away under us.
        self._ws = None
        self._all_done.set()
        await self.push_error("the avatar service closed the connection; speaking without a face")

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind, request_id = message.get("type"), message.get("request_id")
        if kind == "request_accepted" and request_id is not None:
            self._answered += 1
            sent = self._timelines.pop(self._answered)
            if self._answered <= self._interrupted_upto:
                self._interrupted.add(request_id)
            else:
                self._decoders[request_id] = Fmp4FrameDecoder(with_audio=False)
                self._timeline_of[request_id] = sent
        elif kind == "video_chunk" and request_id in self._decoders:
            frames = self._decoders[request_id].feed(_chunk_bytes(message), is_last=message["is_last"])
            timeline, rate = self._timeline_of[request_id]
            if message["is_last"]:
                del self._decoders[request_id]
                del self._timeline_of[request_id]
            for frame in frames:
                if request_id in self._interrupted:
                    return
                await self._push_av(frame, timeline, rate)
            if not self._decoders and not self._speaking:
                self._all_done.set()
        elif kind == "error" and message.get("code") != "interrupted":
            if request_id is None and self._answered < self._opened:
                # Only an utterance's opening is refused without a request id (e.g. rate_limited): it is over.
                self._answered += 1
                self._timelines.pop(self._answered, None)
            self._decoders.pop(str(request_id), None)
            self._timeline_of.pop(str(request_id), None)
            if not self._decoders and not self._speaking:
                self._all_done.set()
            await self.push_frame(ErrorFrame(f"avatar service: {message.get('code')}: {message.get('message')}"))

    async def _push_av(self, frame: AvFrame, timeline: bytearray, rate: int) -> None:
        """The image, then the audio it shows: its 40 ms of the timeline (silence past what was sent)."""
        height, width = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = True  # shown when the audio before it has played
        if frame.index == 0:
            await self.stop_ttfb_metrics()
        per_frame = 2 * (rate // 25)
        audio = bytes(timeline[frame.index * per_frame : (frame.index + 1) * per_frame])
        await self.push_frame(image)
        await self.push_frame(TTSAudioRawFrame(audio=audio.ljust(per_frame, b"\0"), sample_rate=rate,
                                               num_channels=1))


def _chunk_bytes(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["data"])
