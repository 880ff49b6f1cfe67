"""The TTS processor's pure core: one text request → its speech segments in speaking order."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from processors.tts.audio import LIPSYNC_RATE, PLAYBACK_RATE, LoudnessTarget, ShapedSpeech, pause_after, shape_speech
from processors.tts.engines.base import EngineConfigError, TtsEngine, TtsFailure, UnknownVoice
from processors.tts.engines.registry import EngineSet
from processors.tts.text import SpeechText, plan_speech
from schemas.requests import TextRequest, rate_problem
from schemas.session import SessionError
from schemas.speech import SpeechSegment, SpeechSegmentMeta

OUTPUT_RATE = PLAYBACK_RATE  # one playback rate for every request: the MP4's audio track has a single rate

InterruptCheck = Callable[[str, str, int | None], bool]  # (session_id, request_id, created_at_ms) → stop?


@dataclass(frozen=True)
class Planned:
    """One piece of a request and who says it (the request's voice only applies to the backend it chose)."""

    piece: SpeechText
    engine: TtsEngine
    voice: str | None


def never_interrupted(_session_id: str, _request_id: str, _created_at_ms: int | None) -> bool:
    return False


class RequestRefused(Exception):
    """A request that cannot be spoken at all; its code and message become the request's one error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TtsCore:
    """Plans the text (Persian-first normalisation, latency-friendly pieces) and speaks each piece.

    Segments are produced lazily, one per piece, in order: the caller sends each before the next is spoken,
    so the first (short) piece leaves while the rest of the paragraph is still text. `interrupted()` (or the
    `is_interrupted` check, e.g. an InterruptRegistry fed from ``avatar.control``) stops a request between
    pieces; the request then ends with one ``interrupted`` error instead of its remaining segments.
    """

    def __init__(self, engines: EngineSet | TtsEngine, *, max_text_chars: int, first_piece_chars: int = 60,
                 piece_chars: int = 220, loudness: LoudnessTarget | None = None,
                 is_interrupted: InterruptCheck = never_interrupted, remembered_interrupts: int = 10_000) -> None:
        self.engines = engines if isinstance(engines, EngineSet) else EngineSet.of(engines)
        self.max_text_chars = max_text_chars
        self.first_piece_chars = first_piece_chars
        self.piece_chars = piece_chars
        self.loudness = loudness or LoudnessTarget()
        self.is_interrupted = is_interrupted
        self.remembered_interrupts = remembered_interrupts
        self._interrupted: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # interrupted() is called from a control-listener thread

    @property
    def engine(self) -> TtsEngine:
        """The default backend."""
        return self.engines.default

    def warm_up(self) -> None:
        """Build the text front end (hazm's normaliser takes ~2 s) and run every backend once, at start-up.

        A backend that cannot speak now (a wrong key, an unreachable server) is a start-up failure, not a
        failure of the first user's request: EngineConfigError names it.
        """
        for engine in self.engines.engines.values():
            for piece in plan_speech("سلام، حال شما چطور است؟ Hello."):
                if piece.language not in engine.languages:
                    continue
                try:
                    engine.synthesize(piece.spoken, piece.language)
                except TtsFailure as failure:
                    raise EngineConfigError(f"TTS engine '{engine.name}' failed its start-up check: {failure}") \
                        from failure

    def interrupted(self, request_id: str) -> None:
        """Stop this request: no segment of it is produced after the piece being spoken now.

        Thread-safe; may arrive before the request does (it is then refused when it comes). Bounded memory.
        """
        with self._lock:
            self._interrupted[request_id] = None
            while len(self._interrupted) > self.remembered_interrupts:
                self._interrupted.popitem(last=False)

    def handle(self, request: TextRequest) -> Iterator[SpeechSegment | SessionError]:
        """The request's segments in order, or its one error (up front, or where a backend failed)."""
        try:
            planned = self._plan(request)
        except RequestRefused as refused:
            yield _error(request, refused.code, str(refused))
            return
        created_at_ms = request.created_at_ms or int(time.time() * 1000)
        start_samples = 0
        for index, plan in enumerate(planned):
            if self._stopped(request):
                yield _interrupted(request)
                return
            is_last = index == len(planned) - 1
            try:
                shaped, voice = self._speak(plan, is_last=is_last, rate=request.rate or 1.0)
            except TtsFailure as failure:
                yield _error(request, "tts_failed", f"{plan.engine.name}: {failure}")
                return
            if self._stopped(request):  # a slow backend: the interrupt may have come while it spoke
                yield _interrupted(request)
                return
            meta = self._meta(request, plan, index, is_last, shaped, start_samples, created_at_ms, voice)
            yield SpeechSegment(meta, shaped.playback.astype("<i2").tobytes(), shaped.lipsync.astype("<i2").tobytes())
            start_samples += len(shaped.playback)

    def _plan(self, request: TextRequest) -> list[Planned]:
        """Everything that can fail before a sound is made fails here, so a request never stops half-said
        for a reason known up front."""
        if self._stopped(request):
            raise RequestRefused("interrupted", "the request was interrupted before it was spoken")
        if len(request.text) > self.max_text_chars:
            raise RequestRefused("text_too_long", f"text has {len(request.text)} characters; the limit is "
                                                  f"{self.max_text_chars}")
        problem = rate_problem(request.rate)
        if problem is not None:
            raise RequestRefused("invalid_rate", problem)
        chosen = self._chosen(request)
        try:
            chosen.check_voice(request.voice)
        except UnknownVoice as error:
            raise RequestRefused("unknown_voice", str(error)) from None
        pieces = plan_speech(request.text, request.language, first_max_chars=self.first_piece_chars,
                             max_chars=self.piece_chars)
        if not pieces:
            raise RequestRefused("nothing_to_say", "the text has nothing speakable (only spaces, punctuation or "
                                                   "symbols)")
        plans = []
        for piece in pieces:
            speaker = self._speaker(piece, chosen)
            plans.append(Planned(piece, speaker, request.voice if speaker is chosen else None))
        return plans

    def _chosen(self, request: TextRequest) -> TtsEngine:
        engine = self.engines.get(request.tts)
        if engine is None:
            raise RequestRefused("tts_unavailable", f"TTS engine '{request.tts}' is not enabled here; enabled: "
                                                    f"{', '.join(self.engines.names)} (TTS_EXTRA_ENGINES)")
        return engine

    def _speaker(self, piece: SpeechText, chosen: TtsEngine) -> TtsEngine:
        speaker = self.engines.speaker_of(piece.language, chosen)
        if speaker is None:
            raise RequestRefused("tts_unavailable", f"no enabled TTS engine speaks '{piece.language}'")
        return speaker

    def _stopped(self, request: TextRequest) -> bool:
        with self._lock:
            if request.request_id in self._interrupted:
                return True
        return self.is_interrupted(request.session_id, request.request_id, request.created_at_ms)

    def _speak(self, plan: Planned, *, is_last: bool, rate: float) -> tuple[ShapedSpeech, str | None]:
        """The piece shaped for the segment, and the voice that said it (the backend's choice, else the asked)."""
        speech = plan.engine.synthesize(plan.piece.spoken, plan.piece.language, plan.voice, rate=rate)
        pause_ms = pause_after(plan.piece.display, is_last=is_last)
        shaped = shape_speech(speech.pcm, speech.sample_rate, pause_ms=pause_ms, target=self.loudness,
                              phonemes=speech.phonemes)
        return shaped, speech.voice or plan.voice

    @staticmethod
    def _meta(request: TextRequest, plan: Planned, index: int, is_last: bool, shaped: ShapedSpeech,
              start_samples: int, created_at_ms: int, voice: str | None) -> SpeechSegmentMeta:
        return SpeechSegmentMeta(
            request_id=request.request_id, session_id=request.session_id, avatar_id=request.avatar_id,
            segment_index=index, is_last=is_last, text=plan.piece.display, spoken=plan.piece.spoken,
            language=plan.piece.language, sample_rate=OUTPUT_RATE, sample_count=len(shaped.playback),
            start_ms=start_samples * 1000 // OUTPUT_RATE, start_sample=start_samples, created_at_ms=created_at_ms,
            lipsync_sample_rate=LIPSYNC_RATE, lipsync_sample_count=len(shaped.lipsync),
            speech_ms=shaped.speech_samples * 1000 // OUTPUT_RATE, engine=plan.engine.name, voice=voice,
            phonemes=list(shaped.phonemes) or None,  # a backend without timings leaves the field out
        )


def _error(request: TextRequest, code: str, message: str) -> SessionError:
    return SessionError(request_id=request.request_id, code=code, message=message)


def _interrupted(request: TextRequest) -> SessionError:
    return _error(request, "interrupted", "the request was interrupted")
