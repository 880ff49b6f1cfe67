"""Phoneme timings from the TTS: espeak-ng's library events and the marks' way through shaping into avatar.speech."""

from __future__ import annotations

import numpy as np
import pytest

from processors.tts.audio import PLAYBACK_RATE, LoudnessTarget, map_marks, shape_speech, to_float, to_pcm16, trim_bounds
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines.base import Language, Speech
from processors.tts.engines.espeak import EspeakEngine
from processors.tts.engines.registry import EngineSet
from schemas.requests import TextRequest
from schemas.speech import PAUSE, PhonemeMark, SpeechSegment, SpeechSegmentMeta

TARGET = LoudnessTarget()
BILABIALS = frozenset({"p", "b", "m"})
ENGLISH = "Bob and Mom moved the blue boots."
PERSIAN = "بابا و مامان با هم به باغ می‌روند."


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="module")
def core(espeak: EspeakEngine) -> TtsCore:
    return TtsCore(espeak, max_text_chars=2000)


def spoken_meta(core: TtsCore, text: str, language: Language) -> SpeechSegmentMeta:
    segments = [event for event in core.handle(TextRequest(session_id="s", avatar_id="sample", text=text,
                                                           language=language))
                if isinstance(event, SpeechSegment)]
    assert len(segments) == 1, "a short sentence is one piece"
    return SpeechSegment.from_kafka(segments[0].to_kafka()).meta  # as the lip-sync reads it


def letter_positions(text: str, letters: str) -> list[float]:
    return [index / len(text) for index, character in enumerate(text) if character in letters]


def assert_bilabials_where_the_text_has_them(meta: SpeechSegmentMeta, text: str, letters: str) -> None:
    """Every b/m of the text has its mark, in order, at about the share of the speech where the text has it."""
    marks = meta.phonemes or []
    speech_end = marks[-1][0]
    bilabials = [at / speech_end for at, name in marks if name in BILABIALS]
    expected = letter_positions(text, letters)
    assert len(bilabials) == len(expected), marks
    assert all(abs(got - want) < 0.1 for got, want in zip(bilabials, expected, strict=True)), (bilabials, expected)


def test_english_bilabials_come_with_marks_in_order_at_plausible_times(core: TtsCore) -> None:
    meta = spoken_meta(core, ENGLISH, "en")
    assert [name for _, name in meta.phonemes or [] if name in BILABIALS] == ["b", "b", "m", "m", "m", "b", "b"]
    assert_bilabials_where_the_text_has_them(meta, ENGLISH, "BbMm")


def test_persian_bilabials_come_with_marks_in_order_at_plausible_times(core: TtsCore) -> None:
    meta = spoken_meta(core, PERSIAN, "fa")
    assert [name for _, name in meta.phonemes or [] if name in BILABIALS] == list("bbmmbmbbm")
    assert_bilabials_where_the_text_has_them(meta, PERSIAN, "بم")
    assert {"ɑ", "v", "q"} <= {name for _, name in meta.phonemes or []}, "espeak-ng's fa phonemes, in IPA"


@pytest.mark.parametrize(("text", "language"), [(ENGLISH, "en"), (PERSIAN, "fa")])
def test_marks_sit_on_the_segments_playback_samples_and_end_with_the_pause(core: TtsCore, text: str,
                                                                           language: Language) -> None:
    segments = [event for event in core.handle(TextRequest(session_id="s", avatar_id="sample", text=text,
                                                           language=language))
                if isinstance(event, SpeechSegment)]
    meta = segments[0].meta
    playback = np.frombuffer(segments[0].pcm16, "<i2")
    marks = meta.phonemes or []
    assert marks[-1][1] == PAUSE and abs(marks[-1][0] * 1000 // OUTPUT_RATE - (meta.speech_ms or 0)) <= 1
    offsets = [at for at, _ in marks]
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] <= meta.sample_count
    assert PAUSE not in {name for _, name in marks[:-1]}
    window = OUTPUT_RATE // 20  # 50 ms around a mark: its sound (a stop's closure is quiet), not the pause
    for at, name in marks[:-1]:
        around = playback[max(0, at - window) : at + window].astype(np.float64)
        assert np.sqrt(np.mean(around**2)) > 30, f"'{name}' at {at} sits in silence"


def test_espeak_marks_follow_the_speaking_rate(espeak: EspeakEngine) -> None:
    slow = EspeakEngine(espeak.library, rate_wpm=120).synthesize(ENGLISH, "en")
    fast = EspeakEngine(espeak.library, rate_wpm=260).synthesize(ENGLISH, "en")
    assert [name for _, name in slow.phonemes] == [name for _, name in fast.phonemes]
    assert fast.phonemes[-1][0] < 0.7 * slow.phonemes[-1][0]


def tone_piece(rate: int, before: int, length: int, after: int) -> np.ndarray:
    """Silence, a tone that is loud from its first sample to its last, silence (PCM16 at ``rate``)."""
    t = np.arange(length) / rate
    tone = 0.3 * np.cos(2 * np.pi * 200 * t) + 0.1  # the offset keeps every sample of it above the gate
    audio = np.concatenate([np.zeros(before), tone, np.zeros(after)]).astype(np.float32)
    return to_pcm16(audio)


def test_marks_move_with_the_trim_and_scale_with_the_resampling_exactly() -> None:
    rate, before, length = 16_000, 4000, 8000
    pcm = tone_piece(rate, before, length, after=3200)
    marks: tuple[PhonemeMark, ...] = ((1000, "h"), (4000, "b"), (6000, "ɑ"), (11_999, "m"), (15_000, "s"))
    shaped = shape_speech(pcm, rate, pause_ms=180, target=TARGET, phonemes=marks)

    margin = rate * 12 // 1000  # trim_silence keeps 12 ms before the first loud sample
    cut = before - margin
    assert trim_bounds(to_float(pcm), rate, TARGET.silence_dbfs)[0] == cut
    expected_length = -(-(length + 2 * margin) * PLAYBACK_RATE // rate)  # resample_poly's ceil(n · up / down)
    assert shaped.speech_samples == expected_length
    assert shaped.phonemes == (
        (0, "h"),  # inside the cut silence: moved to the start
        (round((4000 - cut) * PLAYBACK_RATE / rate), "b"),
        (round((6000 - cut) * PLAYBACK_RATE / rate), "ɑ"),
        (round((11_999 - cut) * PLAYBACK_RATE / rate), "m"),
        (expected_length, "s"),  # inside the cut trailing silence: clamped to the speech's end
        (expected_length, PAUSE),
    )


def test_at_the_playback_rate_marks_only_move_by_the_trim() -> None:
    assert map_marks(((500, "b"), (900, "a")), cut=300, from_rate=PLAYBACK_RATE, to_rate=PLAYBACK_RATE,
                     length=550) == ((200, "b"), (550, "a"))


def test_a_silent_piece_keeps_its_marks_at_zero() -> None:
    shaped = shape_speech(np.zeros(2000, np.int16), PLAYBACK_RATE, pause_ms=60, target=TARGET,
                          phonemes=((100, "b"), (900, "a")))
    assert shaped.speech_samples == 0 and shaped.phonemes == ((0, "b"), (0, "a"), (0, PAUSE))


class NoTimings:
    """A backend that knows no timings (as OpenAI's): espeak-ng's audio without its marks."""

    name = "openai"
    languages: frozenset[Language] = frozenset({"fa", "en"})

    def __init__(self, inner: EspeakEngine) -> None:
        self.inner = inner

    def check_voice(self, voice: str | None) -> None:
        return None

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        speech = self.inner.synthesize(text, language, rate=rate)
        return Speech(speech.pcm, speech.sample_rate)


def test_a_backend_without_timings_leaves_the_field_out(espeak: EspeakEngine) -> None:
    core = TtsCore(EngineSet.of(NoTimings(espeak)), max_text_chars=2000)
    segment = next(event for event in core.handle(TextRequest(session_id="s", avatar_id="sample", text=ENGLISH))
                   if isinstance(event, SpeechSegment))
    assert segment.meta.phonemes is None and segment.meta.schema_version == 3
    assert b'"phonemes"' not in segment.to_kafka()


def test_a_mark_placed_before_its_predecessor_starts_with_it_so_the_segment_validates() -> None:
    assert map_marks(((500, "b"), (400, "a"), (900, "m")), cut=0, from_rate=PLAYBACK_RATE, to_rate=PLAYBACK_RATE,
                     length=1000) == ((500, "b"), (500, "a"), (900, "m"))
