"""The service's WebSocket as every framework adapter uses it: an agent's audio in, each video frame with its audio out.

A framework's adapter (``integrations/pipecat``, ``integrations/livekit``) streams its agent's speech through an
``AvatarLink`` as binary ``PCM1`` frames, one utterance at a time (``send_audio`` … ``end_utterance``), and is
called back with every 40 ms video frame of the lip-synced answer paired with the audio that frame shows. That
audio is the agent's own, exactly as sent: the service cuts an utterance by a fixed rule
(``producers.audio.Utterance``: leading silence dropped, whole 40 ms frames), so the same cut run here on what is
sent knows the samples of every video frame without decoding the video's AAC, and each image is handed over as
soon as it is decoded (``consumers/fmp4_frames.py``). ``interrupt`` stops the utterance in the service and drops
every frame of it not handed over yet. What the adapter does with frames and errors is its own business: the link
holds no framework type.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import websockets

from consumers.fmp4_frames import Fmp4FrameDecoder
from producers.audio import SUPPORTED_RATES, AudioError, Utterance, UtteranceTarget, pcm16_samples
from schemas.speech import SpeechSegment
from schemas.websocket import pack_audio_frame

RESAMPLE_RATE = 24_000  # for a TTS whose rate the service does not take (8 kHz, 44.1 kHz, ...)
FPS = 25  # the service's video rate: one frame per 40 ms of audio
CONNECT_TIMEOUT_S = 5.0  # an unreachable service is reported after this long, not the library's default
# A framework may hand over long frames (a whole sentence at once): sent as messages of at most a second, they stay
# far below the gateway's AUDIO_MAX_MESSAGE_S (5 s) and WS_MAX_MESSAGE_BYTES (1 MiB, which closes the connection).
MAX_MESSAGE_S = 1.0
# Refusals of one chunk: the utterance goes on in the service (every other error of a request ends it).
CHUNK_REFUSALS = frozenset({"sample_rate_changed", "unsupported_sample_rate", "unsupported_sample_format",
                            "odd_byte_count", "invalid_audio_data", "missing_audio_header", "audio_message_too_long",
                            "audio_too_long"})


class AvatarUnavailable(Exception):
    """The service could not be reached, or refused the avatar: the agent speaks without a face."""


@dataclass(frozen=True)
class SyncedFrame:
    """One video frame of an utterance and the agent's audio it shows (``rate // 25`` samples of PCM16 mono)."""

    request_id: str
    index: int  # frame number within the utterance
    image: npt.NDArray[np.uint8]  # (height, width, channels) in the link's pixel format
    audio: bytes  # PCM16LE mono; silence past what was sent
    sample_rate: int
    last: bool  # the utterance's final frame


def frame_audio(timeline: bytes | bytearray, index: int, rate: int) -> bytes:
    """Frame ``index``'s slice of an utterance's audio: ``rate / 25`` samples, silence-padded past its end."""
    per_frame = 2 * (rate // FPS)
    return bytes(timeline[index * per_frame : (index + 1) * per_frame]).ljust(per_frame, b"\0")


def to_service_pcm(pcm: bytes, rate: int, channels: int, resampler: av.AudioResampler | None
                   ) -> tuple[int, bytes, av.AudioResampler | None]:
    """The audio as (rate, PCM16 mono) the service takes: unchanged when it can be, else resampled to 24 kHz mono.

    Returns the resampler to use for the utterance's next piece (its state joins the pieces without a click).
    """
    if rate in SUPPORTED_RATES and channels == 1:
        return rate, pcm, resampler
    samples = np.frombuffer(pcm, np.int16).reshape(1, -1)
    source = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono" if channels == 1 else "stereo")
    source.sample_rate = rate
    resampler = resampler or av.AudioResampler(format="s16", layout="mono", rate=RESAMPLE_RATE)
    out = b"".join(bytes(part.planes[0])[: part.samples * 2] for part in resampler.resample(source))
    return RESAMPLE_RATE, out, resampler


class UtteranceMirror:
    """The service's cut of one utterance, run on what is sent: the audio of its video frames, in order."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.timeline = bytearray()  # the samples of frame k are timeline[k * rate/25 : (k+1) * rate/25]
        self._cut: Utterance | None = Utterance(UtteranceTarget("mirror", "mirror", "mirror", rate), max_samples=2**62)

    def add(self, pcm: bytes) -> None:
        if self._cut is not None:
            self._keep(lambda cut: cut.add(pcm16_samples(pcm)))

    def end(self) -> None:
        if self._cut is not None:
            self._keep(lambda cut: cut.end())
            self._cut = None

    def _keep(self, step: Callable[[Utterance], Iterable[SpeechSegment]]) -> None:
        assert self._cut is not None
        try:
            for segment in step(self._cut):
                self.timeline.extend(segment.pcm16)
        except AudioError:  # the service refuses the same audio and says so (an error message)
            self._cut = None


OnFrame = Callable[[SyncedFrame], Awaitable[None]]
OnError = Callable[[str], Awaitable[None]]
OnEnded = Callable[[str | None], Awaitable[None]]


class AvatarLink:
    """One WebSocket session with the service for one agent: utterances out, ``SyncedFrame``s back.

    ``on_frame`` gets every frame in order; ``on_ended`` an utterance's request id after its last frame, or when
    the service refused it (``None`` when refused before it had an id), not when it was interrupted; ``on_error``
    every error of the service and the loss of the connection, as one sentence. Run ``receive()`` as a task
    after ``connect()``; it returns when the connection ends.
    """

    def __init__(self, *, url: str, avatar_id: str, token: str | None = None, pixel_format: str = "rgb24",
                 on_frame: OnFrame, on_error: OnError, on_ended: OnEnded | None = None) -> None:
        self.url = url if token is None else f"{url}?token={token}"
        self.avatar_id = avatar_id
        self.pixel_format = pixel_format
        self._on_frame, self._on_error, self._on_ended = on_frame, on_error, on_ended
        self._ws: websockets.ClientConnection | None = None
        self._closing = False
        self.session_id: str | None = None
        self._sending: UtteranceMirror | None = None  # the utterance open in the service
        self._resampler: av.AudioResampler | None = None
        # Utterances opened and not answered yet (oldest first); an interrupt covers those opened before it, also
        # one whose request_accepted is still on its way.
        self._opened = 0
        self._answered = 0
        self._interrupted_upto = 0
        self._unanswered: dict[int, UtteranceMirror] = {}
        self._playing: dict[str, tuple[Fmp4FrameDecoder, UtteranceMirror]] = {}  # requests whose video is coming
        self._interrupted: set[str] = set()
        self.idle = asyncio.Event()  # no utterance open or still coming back
        self.idle.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def connect(self) -> None:
        """Opens the session with the avatar; raises ``AvatarUnavailable`` saying why it could not."""
        try:
            ws = await websockets.connect(self.url, max_size=None, open_timeout=CONNECT_TIMEOUT_S)
            await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": self.avatar_id}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError, websockets.WebSocketException) as error:
            raise AvatarUnavailable(f"avatar service unreachable at {self.url}: {error or type(error).__name__}"
                                    ) from error
        if ready.get("type") != "session_ready":
            await ws.close()
            raise AvatarUnavailable(f"the avatar service refused avatar '{self.avatar_id}': {ready.get('message')}")
        self._ws, self._closing = ws, False
        self.session_id = ready["session_id"]

    async def close(self) -> None:
        if self._ws is not None:
            self._closing = True
            ws, self._ws = self._ws, None
            await ws.close()
        self.idle.set()

    async def send_audio(self, pcm: bytes, rate: int, channels: int = 1) -> bool:
        """Sends a piece of the agent's speech, opening an utterance if none is; True when it opened one."""
        opened = self._sending is None
        if opened:
            self._opened += 1
            self._resampler = None
            self.idle.clear()
        rate, pcm, self._resampler = to_service_pcm(pcm, rate, channels, self._resampler)
        mirror = self._sending
        if mirror is None:
            mirror = self._sending = self._unanswered[self._opened] = UtteranceMirror(rate)
        mirror.add(pcm)  # before sending: a lost connection in between must not find a half-kept utterance
        step = 2 * int(rate * MAX_MESSAGE_S)
        for start in range(0, len(pcm), step):
            await self._send(pack_audio_frame(rate, pcm[start : start + step]))
        return opened

    async def end_utterance(self) -> None:
        """The utterance being sent is complete (``audio_end``); its last frames follow."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await self._send(json.dumps({"type": "audio_end"}))
            sending.end()

    async def interrupt(self) -> None:
        """Barge-in: the service stops the utterance; nothing of it is handed over any more."""
        self._sending = None
        self._interrupted.update(self._playing)
        self._playing.clear()
        self._interrupted_upto = self._opened
        self.idle.set()
        await self._send(json.dumps({"type": "interrupt"}))

    def is_interrupted(self, request_id: str) -> bool:
        """Whether a frame already handed over belongs to an utterance interrupted since (drop it)."""
        return request_id in self._interrupted

    async def _send(self, data: str | bytes) -> None:
        if self._ws is None:
            return
        try:
            await self._ws.send(data)
        except websockets.ConnectionClosed as closed:
            await self._lost(f"the avatar service closed the connection ({closed})")

    async def _lost(self, why: str) -> None:
        """The service went away under us: nothing more comes back, and the adapter is told."""
        if self._ws is None:
            return
        self._ws = None
        self._sending = None
        self._playing.clear()
        self.idle.set()
        await self._on_error(why)

    async def receive(self) -> None:
        """Hands over what the service sends until the connection ends."""
        ws = self._ws
        assert ws is not None, "connect() first"
        try:
            async for raw in ws:
                await self._on_message(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        if not self._closing:
            await self._lost("the avatar service closed the connection")

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind, request_id = message.get("type"), message.get("request_id")
        if kind == "request_accepted" and request_id is not None:
            self._answered += 1
            mirror = self._unanswered.pop(self._answered)
            if self._answered <= self._interrupted_upto:
                self._interrupted.add(request_id)
            else:
                self._playing[request_id] = (Fmp4FrameDecoder(with_audio=False, pixel_format=self.pixel_format),
                                             mirror)
        elif kind == "video_chunk" and request_id in self._playing:
            await self._on_chunk(request_id, message)
        elif kind == "error" and message.get("code") != "interrupted":
            await self._on_refused(request_id, message)

    async def _on_chunk(self, request_id: str, message: dict[str, Any]) -> None:
        decoder, mirror = self._playing[request_id]
        is_last = bool(message["is_last"])
        frames = decoder.feed(base64.b64decode(message["data"]), is_last=is_last)
        if is_last:
            del self._playing[request_id]
        for position, frame in enumerate(frames):
            if request_id in self._interrupted:
                return
            last = is_last and position == len(frames) - 1
            await self._on_frame(SyncedFrame(request_id, frame.index, frame.image,
                                             frame_audio(mirror.timeline, frame.index, mirror.rate), mirror.rate,
                                             last))
        if is_last:
            await self._ended(request_id)

    async def _on_refused(self, request_id: str | None, message: dict[str, Any]) -> None:
        if request_id is None and self._answered < self._opened:
            # Only an utterance's opening is refused without a request id (e.g. rate_limited): it is over.
            self._answered += 1
            self._unanswered.pop(self._answered, None)
            if self._answered == self._opened:
                self._sending = None  # the one being sent: what follows opens a new utterance
            await self._ended(None)
        elif message.get("code") not in CHUNK_REFUSALS and request_id is not None \
                and self._playing.pop(request_id, None) is not None:
            await self._ended(request_id)
        await self._on_error(f"avatar service: {message.get('code')}: {message.get('message')}")

    async def _ended(self, request_id: str | None) -> None:
        if not self._playing and not self._unanswered and self._sending is None:
            self.idle.set()
        if self._on_ended is not None:
            await self._on_ended(request_id)
