"""Text through the service's own processor cores: TTS core → speech segments → lip-sync core → the MP4 a viewer
gets, decoded; and the truth (phone timings, pauses) read from the same segments.

Nothing here is a copy of the processors: segments come from ``TtsCore.handle`` with the backend under
test, chunks from ``LipSyncCore.handle`` with the engine under test, exactly as the Kafka adapters call
them. The CPU time of the lip-sync core (render + H.264) is kept, so the same run gives the real-time factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from infra.settings import Settings
from processors.lipsync.core import LipSyncCore, OnsetEstimator
from processors.lipsync.engines.base import LipSyncEngine
from processors.tts.audio import LoudnessTarget
from processors.tts.core import TtsCore
from processors.tts.engines.base import TtsEngine
from processors.tts.engines.registry import EngineSet
from schemas.avatar import AvatarFaceData, RgbFrame
from schemas.common import Language
from schemas.requests import TextRequest
from schemas.session import SessionError, VideoChunkMeta
from schemas.speech import SpeechSegment
from scripts.lipsync_quality.media import decode
from scripts.lipsync_quality.phonetics import pauses, phones_from_events, speech_span
from scripts.lipsync_quality.speech import Utterance, resample


class PipelineError(RuntimeError):
    """A core answered with an error instead of speech or video."""


@dataclass(frozen=True)
class Rendered:
    """What a viewer received for one request, and what it cost the lip-sync core."""

    frames: list[RgbFrame]
    cpu_s: float  # lip-sync core CPU seconds (render + encode), this process
    speech_s: float


def tts_core(engine: TtsEngine, settings: Settings | None = None) -> TtsCore:
    """A TTS core with one backend, configured as the processor configures it."""
    config = settings or Settings()
    return TtsCore(EngineSet.of(engine), max_text_chars=config.max_text_chars,
                   first_piece_chars=config.tts_first_piece_chars, piece_chars=config.tts_piece_chars,
                   loudness=LoudnessTarget(rms_dbfs=config.tts_loudness_dbfs))


def speak(core: TtsCore, text: str, language: Language, avatar_id: str) -> list[SpeechSegment]:
    """The segments the TTS processor would put on ``avatar.speech`` for this text."""
    request = TextRequest(session_id="quality-benchmark", avatar_id=avatar_id, text=text, language=language)
    segments: list[SpeechSegment] = []
    for item in core.handle(request):
        if isinstance(item, SessionError):
            raise PipelineError(f"TTS: {item.code}: {item.message}")
        segments.append(item)
    return segments


def truth(segments: Sequence[SpeechSegment], language: str, text: str) -> Utterance:
    """The request's audio (at the lip-sync rate) and the phone timings its segments carry."""
    events: list[tuple[float, str]] = []
    pcm: list[np.ndarray] = []
    for segment in segments:
        meta = segment.meta
        start = (meta.start_sample or 0) / meta.sample_rate
        events += [(start + offset / meta.sample_rate, name) for offset, name in meta.phonemes or ()]
        pcm.append(np.frombuffer(segment.pcm16, dtype="<i2"))
    rate = segments[0].meta.sample_rate
    audio = resample(np.concatenate(pcm).astype(np.int16), rate)
    _, speech_end = speech_span(audio, 16_000)
    phones = tuple(phones_from_events(events, speech_end))
    return Utterance(language, text, audio, phones, tuple(pauses(audio, 16_000)), tuple(events))


def render(engine: LipSyncEngine, avatar: AvatarFaceData, segments: Sequence[SpeechSegment],
           estimate: OnsetEstimator | None = None) -> Rendered:
    """The request's video through the lip-sync core, decoded back to frames."""
    core = LipSyncCore(engine, _only(avatar), estimate_onsets=estimate)
    data = bytearray()
    cpu = 0.0
    for segment in segments:
        started = time.process_time()
        events = list(core.handle(segment))
        cpu += time.process_time() - started
        for event in events:
            if isinstance(event.meta, SessionError):
                raise PipelineError(f"lip-sync: {event.meta.code}: {event.meta.message}")
            assert isinstance(event.meta, VideoChunkMeta)
            data += event.payload
    speech_s = sum(s.meta.sample_count / s.meta.sample_rate for s in segments)
    return Rendered(decode(bytes(data)), cpu, speech_s)


def without_timings(segments: Sequence[SpeechSegment]) -> list[SpeechSegment]:
    """The same segments as a backend without phoneme timings (OpenAI) would send them."""
    return [SpeechSegment(s.meta.model_copy(update={"phonemes": None}), s.pcm16, s.lipsync_pcm16) for s in segments]


def _only(avatar: AvatarFaceData) -> Callable[[str], AvatarFaceData]:
    def provide(_avatar_id: str) -> AvatarFaceData:
        return avatar

    return provide
