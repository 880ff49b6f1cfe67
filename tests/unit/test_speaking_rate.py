"""The per-request speaking rate: refused out of range (`invalid_rate`) at every door, carried on the request,
applied by espeak-ng with its phoneme timings still where the sounds are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.session_reader import PipelineError
from gateway.speak import Refusal, UsableAvatar, admit
from gateway.ws import parse_client_message
from infra.settings import Settings
from processors.tts.core import TtsCore
from processors.tts.engines.base import Speech
from processors.tts.engines.espeak import MAX_WPM, MIN_WPM, EspeakEngine
from producers.cli import build_parser
from producers.client import AvatarProducer
from schemas.avatar import VoiceChoice
from schemas.requests import TextRequest
from schemas.session import SessionError
from schemas.speech import SpeechSegment
from schemas.websocket import TextInput

SETTINGS = Settings(_env_file=None)
SAMPLE = UsableAvatar("sample", VoiceChoice())
SENTENCE = "سلام، حال شما چطور است؟"


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


@pytest.mark.parametrize("rate", [0.49, 2.01, 0.0, -1.0, 10.0])
def test_the_gateway_refuses_a_rate_out_of_range_with_invalid_rate(rate: float) -> None:
    with pytest.raises(Refusal) as refused:
        admit(SETTINGS, SAMPLE, "سلام", None, VoiceChoice(), rate)
    assert refused.value.code == "invalid_rate" and "0.5-2" in refused.value.message


@pytest.mark.parametrize("rate", [0.5, 1.0, 1.25, 2.0, None])
def test_the_gateway_passes_a_rate_in_range_on_to_the_request(rate: float | None) -> None:
    assert admit(SETTINGS, SAMPLE, "سلام", None, VoiceChoice(), rate).rate == rate


def test_a_websocket_text_input_carries_its_rate_and_one_without_still_parses() -> None:
    with_rate = parse_client_message(json.dumps({"type": "text_input", "text": "hi", "rate": 1.5}))
    assert isinstance(with_rate, TextInput) and with_rate.rate == 1.5
    without = parse_client_message(json.dumps({"type": "text_input", "text": "hi"}))
    assert isinstance(without, TextInput) and without.rate is None


def test_an_old_request_without_a_rate_is_still_accepted_and_a_new_one_round_trips() -> None:
    old = TextRequest.model_validate_json(b'{"schema_version":1,"type":"text","session_id":"s","avatar_id":"a",'
                                          b'"text":"hi"}')
    assert old.rate is None and "rate" not in json.loads(old.to_kafka())
    new = TextRequest(session_id="s", avatar_id="a", text="hi", rate=0.75)
    assert TextRequest.model_validate_json(new.to_kafka()).rate == 0.75


def test_the_tts_processor_refuses_an_out_of_range_rate_from_any_producer(espeak: EspeakEngine) -> None:
    events = list(TtsCore(espeak, max_text_chars=100).handle(TextRequest(session_id="s", avatar_id="a",
                                                                         text="hi", rate=3.0)))
    assert [e.code if isinstance(e, SessionError) else e for e in events] == ["invalid_rate"]


def test_the_sdk_refuses_an_out_of_range_rate_before_sending() -> None:
    producer = AvatarProducer(Settings(_env_file=None, kafka_bootstrap_servers="127.0.0.1:9"))
    try:
        with pytest.raises(PipelineError) as refused:
            producer.send_text(session_id="s", avatar_id="a", text="hi", rate=2.5, wait=False)
        assert refused.value.code == "invalid_rate"
    finally:
        producer.close(timeout_s=0)


def test_the_cli_takes_a_rate() -> None:
    parser = build_parser(Settings(_env_file=None))
    assert parser.parse_args(["say", "hello", "--rate", "1.5"]).rate == 1.5
    assert parser.parse_args(["say", "hello"]).rate is None


def comma_pause_end(speech: Speech) -> int:
    """Where the longest silence inside the speech (the comma's pause) ends, in samples (5 ms frames)."""
    frame = speech.sample_rate // 200
    loud = [int(abs(speech.pcm[i:i + frame].astype(np.int32)).max()) >= 300
            for i in range(0, len(speech.pcm) - frame, frame)]
    gaps: list[tuple[int, int]] = []
    start: int | None = None
    for index, is_loud in enumerate(loud):
        if not is_loud and start is None and index > 2:
            start = index
        elif is_loud and start is not None:
            gaps.append((start, index))
            start = None
    return max(gaps, key=lambda gap: gap[1] - gap[0])[1] * frame


def test_espeak_speaks_faster_and_slower_with_its_timings_where_the_sounds_are(espeak: EspeakEngine) -> None:
    normal = espeak.synthesize(SENTENCE, "fa")
    fast = espeak.synthesize(SENTENCE, "fa", rate=2.0)
    slow = espeak.synthesize(SENTENCE, "fa", rate=0.5)
    assert 0.3 < len(fast.pcm) / len(normal.pcm) < 0.7
    assert 1.6 < len(slow.pcm) / len(normal.pcm) < 2.6
    for speech in (normal, fast, slow):
        names = [name for _, name in speech.phonemes]
        assert names == [name for _, name in normal.phonemes], "the same sounds, only faster or slower"
        offsets = [at for at, _ in speech.phonemes]
        assert offsets == sorted(offsets) and offsets[-1] <= len(speech.pcm)
        # "حال" starts where the comma's silence ends in the audio, at every rate (within 10 ms)
        after_comma = next(at for at, name in speech.phonemes if name == "h")
        assert abs(after_comma - comma_pause_end(speech)) < speech.sample_rate // 100


def test_espeak_keeps_a_scaled_rate_within_what_it_can_say(espeak: EspeakEngine) -> None:
    assert espeak.words_per_minute(1.0) == espeak.rate_wpm
    fast = EspeakEngine(espeak.library, rate_wpm=300)
    assert fast.words_per_minute(2.0) == MAX_WPM and EspeakEngine(espeak.library, rate_wpm=100).words_per_minute(
        0.5) == MIN_WPM


def test_a_segment_at_a_faster_rate_is_shorter(espeak: EspeakEngine) -> None:
    def first(rate: float | None) -> SpeechSegment:
        events = TtsCore(espeak, max_text_chars=100).handle(TextRequest(session_id="s", avatar_id="a",
                                                                        text="Good morning to you.", rate=rate))
        return next(event for event in events if isinstance(event, SpeechSegment))
    normal, fast = first(None), first(1.8)
    assert (fast.meta.speech_ms or 0) < 0.75 * (normal.meta.speech_ms or 0)
