"""The TTS core speaks a request as ordered, gap-free, levelled segments; it fails and stops per request."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from processors.tts.audio import LIPSYNC_RATE, gated_rms_dbfs, to_float
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines.base import Language, Speech, TtsFailure
from processors.tts.engines.espeak import EspeakEngine
from processors.tts.engines.registry import EngineSet
from schemas.requests import TextRequest, TtsEngineName
from schemas.session import SessionError
from schemas.speech import SpeechSegment, SpeechSegmentMeta

PARAGRAPH = ("سلام، حال شما چطور است؟ امروز هوا در تهران آفتابی است و دمای هوا به ۲۵ درجه می‌رسد. "
             "لطفاً فردا ساعت ۱۰:۳۰ به دفتر ما بیایید.")

# Real Persian of each kind the issue names; every backend that runs here must speak all of it plausibly.
CORPUS = {
    "news": "به گزارش خبرگزاری ایرنا، بانک مرکزی روز سه‌شنبه اعلام کرد که نرخ تورم سالانه به ۳۱٫۲ درصد رسیده است.",
    "conversation": "سلام علی جان! خوبی؟ دیروز کجا بودی؟ من دو ساعت منتظرت بودم.",
    "numbers_and_dates": "کنکور سال ۱۴۰۳ در روز ۱۸ اردیبهشت ساعت ۸:۳۰ برگزار شد و ۴۵۰٬۰۰۰ نفر شرکت کردند.",
    "mixed_english": "تیم ما از Kubernetes و Docker استفاده می‌کند و نسخه 2.0.1 هفته بعد منتشر می‌شود.",
    "zwnj_heavy": "دانش‌آموزان کتاب‌هایشان را به کتابخانه‌ی مدرسه برده‌اند و می‌خواهند آن‌ها را پس بدهند.",
}
# espeak-ng at its default rate says about 12-16 characters of Persian a second; allow a wide band
SECONDS_PER_SPOKEN_CHARACTER = (0.03, 0.15)


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="module")
def core(espeak: EspeakEngine) -> TtsCore:
    return TtsCore(espeak, max_text_chars=2000)


def request(text: str, language: Language | None = "fa", *, tts: TtsEngineName | None = None,
            voice: str | None = None, request_id: str = "r1") -> TextRequest:
    return TextRequest(session_id="s1", avatar_id="sample", text=text, language=language, tts=tts, voice=voice,
                       request_id=request_id)


def segments_of(events: list[SpeechSegment | SessionError]) -> list[SpeechSegment]:
    assert all(isinstance(event, SpeechSegment) for event in events), events
    return [event for event in events if isinstance(event, SpeechSegment)]


def pcm(segment: SpeechSegment) -> np.ndarray:
    return np.frombuffer(segment.pcm16, dtype="<i2")


class RecordingEngine:
    """A real backend (espeak-ng) that also records what it was asked, and may fail from a given piece on."""

    def __init__(self, inner: EspeakEngine, name: str = "espeak", languages: frozenset[Language] | None = None,
                 fail_from: int | None = None) -> None:
        self.inner = inner
        self.name = name
        self.languages = languages or inner.languages
        self.fail_from = fail_from
        self.calls: list[tuple[str, str, str | None]] = []
        self.while_speaking: Callable[[int], None] = lambda _call: None

    def check_voice(self, voice: str | None) -> None:
        self.inner.check_voice(voice)

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        self.calls.append((text, language, voice))
        self.while_speaking(len(self.calls))
        if self.fail_from is not None and len(self.calls) > self.fail_from:
            raise TtsFailure("voice server went away")
        return self.inner.synthesize(text, language, voice, rate=rate)


def test_persian_paragraph_becomes_ordered_segments_with_audio(core: TtsCore) -> None:
    segments = segments_of(list(core.handle(request(PARAGRAPH))))
    metas = [s.meta for s in segments]
    assert len(metas) >= 3
    assert [m.segment_index for m in metas] == list(range(len(metas)))
    assert [m.is_last for m in metas] == [False] * (len(metas) - 1) + [True]
    assert len(metas[0].text) <= 60, "the first segment is short so video starts at once"
    assert all(m.sample_rate == OUTPUT_RATE and m.sample_count > OUTPUT_RATE // 2 for m in metas)
    assert "ده و سی دقیقه" in " ".join(m.spoken for m in metas), "times are read as words"


def test_segments_tile_the_request_timeline_exactly_for_subtitles(core: TtsCore) -> None:
    metas = [s.meta for s in segments_of(list(core.handle(request(PARAGRAPH))))]
    ends = [m.start_sample + m.sample_count for m in metas if m.start_sample is not None]
    assert [m.start_sample for m in metas] == [0, *ends[:-1]]
    assert [m.start_ms for m in metas] == [(m.start_sample or 0) * 1000 // OUTPUT_RATE for m in metas]
    for meta in metas:
        assert meta.sample_count % (OUTPUT_RATE // 25) == 0, "whole 40 ms video frames"
        assert 0 < (meta.speech_ms or 0) < meta.sample_count * 1000 // OUTPUT_RATE, "speech, then its pause"
        assert meta.engine == "espeak"


def test_each_segment_carries_the_same_audio_at_sixteen_kilohertz_for_lip_sync(core: TtsCore) -> None:
    for segment in segments_of(list(core.handle(request(PARAGRAPH)))):
        meta = segment.meta
        assert meta.schema_version == 3 and meta.lipsync_sample_rate == LIPSYNC_RATE
        assert meta.lipsync_sample_count * OUTPUT_RATE == meta.sample_count * LIPSYNC_RATE
        assert len(segment.lipsync_pcm16) == 2 * meta.lipsync_sample_count
        assert SpeechSegment.from_kafka(segment.to_kafka()) == segment


def test_every_segment_is_levelled_to_the_same_loudness_in_both_languages(espeak: EspeakEngine) -> None:
    loud_core = TtsCore(espeak, max_text_chars=2000)
    mixed = "من هر روز با Python و JavaScript برنامه می‌نویسم. It is fun, and I learn a lot every day."
    levels = [gated_rms_dbfs(to_float(pcm(s)), OUTPUT_RATE)
              for s in segments_of(list(loud_core.handle(request(mixed, None))))]
    assert {s.meta.language for s in segments_of(list(loud_core.handle(request(mixed, None))))} == {"fa", "en"}
    assert all(level == pytest.approx(-20.0, abs=0.75) for level in levels), levels


def test_joins_between_segments_are_silent_so_they_cannot_click(core: TtsCore) -> None:
    audio = [pcm(s) for s in segments_of(list(core.handle(request(PARAGRAPH))))]
    for before, after in itertools.pairwise(audio):
        assert before[-1] == 0 and after[0] == 0
        assert np.abs(after[:20].astype(np.int32)).max() < 2000, "each segment fades in from silence"


def test_language_is_detected_when_absent(core: TtsCore) -> None:
    segments = segments_of(list(core.handle(request("Good morning, how are you?", None))))
    assert {s.meta.language for s in segments} == {"en"}


def test_text_with_nothing_speakable_is_an_error_not_silence(core: TtsCore) -> None:
    [event] = list(core.handle(request("🙂 ... ؟")))
    assert isinstance(event, SessionError) and event.code == "nothing_to_say"


def test_over_long_text_is_refused(core: TtsCore) -> None:
    short_core = TtsCore(core.engine, max_text_chars=10)
    [event] = list(short_core.handle(request("سلام، حال شما چطور است؟")))
    assert isinstance(event, SessionError) and event.code == "text_too_long"


def test_a_backend_failing_mid_request_ends_that_request_with_an_error_and_the_next_is_spoken(
        espeak: EspeakEngine) -> None:
    engine = RecordingEngine(espeak, fail_from=1)
    flaky = TtsCore(engine, max_text_chars=2000)
    events = list(flaky.handle(request(PARAGRAPH)))
    assert isinstance(events[0], SpeechSegment) and len(events) == 2
    assert isinstance(events[1], SessionError) and events[1].code == "tts_failed"
    assert "voice server went away" in events[1].message
    engine.fail_from = None
    assert segments_of(list(flaky.handle(request("سلام", request_id="r2"))))


def test_request_voice_selects_an_espeak_variant_and_changes_the_sound(core: TtsCore) -> None:
    default = segments_of(list(core.handle(request("سلام دوست من"))))
    female = segments_of(list(core.handle(request("سلام دوست من", voice="f3"))))
    assert default[0].pcm16 != female[0].pcm16


def test_each_segment_names_the_voice_it_was_spoken_with(espeak: EspeakEngine) -> None:
    core = TtsCore(EngineSet.of(espeak), max_text_chars=2000)
    female = segments_of(list(core.handle(request("سلام دوست من. Hello my friend.", language=None, voice="f3"))))
    default = segments_of(list(core.handle(request("سلام دوست من"))))
    assert [s.meta.voice for s in female] == ["f3", "f3"] and default[0].meta.voice is None
    assert SpeechSegment.from_kafka(female[0].to_kafka()).meta.voice == "f3"


def test_an_unknown_voice_is_refused_before_anything_is_spoken(espeak: EspeakEngine) -> None:
    engine = RecordingEngine(espeak)
    [event] = list(TtsCore(engine, max_text_chars=100).handle(request("سلام", voice="no-such-voice")))
    assert isinstance(event, SessionError) and event.code == "unknown_voice"
    assert engine.calls == []


def test_a_backend_that_is_not_enabled_is_refused_by_name(core: TtsCore) -> None:
    [event] = list(core.handle(request("سلام", tts="openai")))
    assert isinstance(event, SessionError) and event.code == "tts_unavailable"
    assert "openai" in event.message and "espeak" in event.message


def test_pieces_in_a_language_the_chosen_backend_lacks_go_to_one_that_speaks_it(espeak: EspeakEngine) -> None:
    english_only = RecordingEngine(espeak, name="piper", languages=frozenset({"en"}))
    fallback = RecordingEngine(espeak)
    both = TtsCore(EngineSet.of(fallback, english_only), max_text_chars=2000)
    segments = segments_of(list(both.handle(request("من Python را دوست دارم.", None, tts="piper", voice="f3"))))
    assert [(s.meta.language, s.meta.engine) for s in segments] == [("fa", "espeak"), ("en", "piper"),
                                                                   ("fa", "espeak")]
    assert [voice for _, _, voice in english_only.calls] == ["f3"], "the voice belongs to the chosen backend"
    assert [voice for _, _, voice in fallback.calls] == [None, None]


def test_no_backend_for_a_language_is_refused_up_front(espeak: EspeakEngine) -> None:
    english_only = RecordingEngine(espeak, name="piper", languages=frozenset({"en"}))
    [event] = list(TtsCore(english_only, max_text_chars=100).handle(request("سلام")))
    assert isinstance(event, SessionError) and event.code == "tts_unavailable" and "'fa'" in event.message


def test_a_request_interrupted_before_it_starts_is_not_spoken(espeak: EspeakEngine) -> None:
    engine = RecordingEngine(espeak)
    tts = TtsCore(engine, max_text_chars=2000)
    tts.interrupted("r1")
    [event] = list(tts.handle(request(PARAGRAPH)))
    assert isinstance(event, SessionError) and event.code == "interrupted"
    assert engine.calls == []


def test_interrupting_mid_request_stops_its_remaining_segments(espeak: EspeakEngine) -> None:
    engine = RecordingEngine(espeak)
    tts = TtsCore(engine, max_text_chars=2000)
    events = tts.handle(request(PARAGRAPH))
    first = next(events)
    tts.interrupted("r1")
    rest = list(events)
    assert isinstance(first, SpeechSegment) and first.meta.segment_index == 0
    assert len(rest) == 1 and isinstance(rest[0], SessionError) and rest[0].code == "interrupted"
    assert len(engine.calls) == 1, "nothing more was synthesised"
    assert segments_of(list(tts.handle(request("سلام", request_id="r2")))), "other requests are unaffected"


def test_an_interrupt_arriving_while_a_piece_is_spoken_drops_that_piece(espeak: EspeakEngine) -> None:
    engine = RecordingEngine(espeak)
    tts = TtsCore(engine, max_text_chars=2000)
    engine.while_speaking = lambda call: tts.interrupted("r1") if call == 2 else None
    events = list(tts.handle(request(PARAGRAPH)))
    assert [type(event).__name__ for event in events] == ["SpeechSegment", "SessionError"]
    assert isinstance(events[1], SessionError) and events[1].code == "interrupted"
    assert len(engine.calls) == 2


def test_an_interrupt_check_from_the_control_topic_stops_a_session_request(espeak: EspeakEngine) -> None:
    stopped_sessions = {"s1"}
    tts = TtsCore(espeak, max_text_chars=2000,
                  is_interrupted=lambda session, _request, _created: session in stopped_sessions)
    [event] = list(tts.handle(request("سلام")))
    assert isinstance(event, SessionError) and event.code == "interrupted"


def test_remembered_interrupts_are_bounded(espeak: EspeakEngine) -> None:
    tts = TtsCore(espeak, max_text_chars=2000, remembered_interrupts=3)
    for index in range(10):
        tts.interrupted(f"old-{index}")
    assert segments_of(list(tts.handle(request("سلام", request_id="old-0"))))
    assert isinstance(next(tts.handle(request("سلام", request_id="old-9"))), SessionError)


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_real_persian_of_every_kind_gives_audible_speech_of_plausible_length(core: TtsCore, kind: str) -> None:
    segments = segments_of(list(core.handle(request(CORPUS[kind], None))))
    spoken_characters = sum(len(s.meta.spoken) for s in segments)
    speech_seconds = sum((s.meta.speech_ms or 0) for s in segments) / 1000
    low, high = SECONDS_PER_SPOKEN_CHARACTER
    assert low * spoken_characters < speech_seconds < high * spoken_characters, (speech_seconds, spoken_characters)
    assert all(np.abs(pcm(s)).max() > 5000 for s in segments), "every segment is audible"


def test_a_v1_segment_without_lip_sync_audio_still_parses_and_a_v1_claiming_some_is_refused() -> None:
    v1 = SpeechSegmentMeta(schema_version=1, request_id="r", session_id="s", avatar_id="a", segment_index=0,
                           is_last=True, text="سلام", spoken="سلام", language="fa", sample_rate=22050,
                           sample_count=2, start_ms=0)
    parsed = SpeechSegment.from_kafka(SpeechSegment(v1, b"\x01\x00\x02\x00").to_kafka())
    assert parsed.pcm16 == b"\x01\x00\x02\x00" and parsed.lipsync_pcm16 == b""
    with pytest.raises(ValueError, match="schema_version 2"):
        SpeechSegmentMeta.model_validate(v1.model_dump() | {"lipsync_sample_count": 4,
                                                            "lipsync_sample_rate": 16000})
