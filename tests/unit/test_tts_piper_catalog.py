"""Piper as a voice catalog: a folder of voices, each one's language read from its .json, Persian and English
at once, chosen per request, at any speaking rate (built tiny voices of piper's real signature, real piper)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from infra.settings import Settings
from processors.tts.core import TtsCore
from processors.tts.engines.base import EngineConfigError, UnknownVoice
from processors.tts.engines.piper import PiperEngine, build_piper
from processors.tts.engines.piper_catalog import read_catalog, voice_files
from processors.tts.engines.registry import EngineSet, build_engines
from schemas.requests import TextRequest
from schemas.session import SessionError
from schemas.speech import PAUSE, SpeechSegment

pytest.importorskip("piper", reason="the optional `piper` extra is not installed")

from tests.support.piper_voices import build_voice  # after the skip: needs piper's phoneme map

PERSIAN_HZ, SECOND_PERSIAN_HZ, ENGLISH_HZ = 200.0, 300.0, 500.0
MIXED = "من هر روز با Python کار می‌کنم. It is a fine language."


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    voices = tmp_path_factory.mktemp("piper-voices")
    build_voice(voices, "fa_IR", "amir", frequency_hz=PERSIAN_HZ)
    build_voice(voices, "fa_IR", "gyro", frequency_hz=SECOND_PERSIAN_HZ)
    build_voice(voices, "en_US", "lessac", frequency_hz=ENGLISH_HZ)
    build_voice(voices, "de_DE", "thorsten")  # a language this service does not speak
    return voices


def catalog_engine(folder: Path, tmp_path: Path, **defaults: str) -> PiperEngine:
    return build_piper(folder, None, defaults={"fa": defaults.get("fa", ""), "en": defaults.get("en", "")},
                       threads=1, cache_dir=tmp_path / "cache", packaged=False)


@pytest.fixture(scope="module")
def engine(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> PiperEngine:
    return catalog_engine(folder, tmp_path_factory.mktemp("cache"))


def dominant_hz(segment: SpeechSegment) -> float:
    samples = np.frombuffer(segment.pcm16, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / segment.meta.sample_rate)[int(np.argmax(spectrum[1:])) + 1])


def spoken(engines: EngineSet | PiperEngine, request: TextRequest) -> list[SpeechSegment]:
    events = list(TtsCore(engines, max_text_chars=2000).handle(request))
    assert not [event for event in events if isinstance(event, SessionError)], events
    return [event for event in events if isinstance(event, SpeechSegment)]


def test_each_voice_language_and_name_come_from_its_json_and_other_languages_are_passed_over(folder: Path) -> None:
    catalog = read_catalog(voice_files(folder))
    assert [(voice.name, voice.language, voice.locale, voice.dataset) for voice in catalog.voices] == [
        ("en_US-lessac-medium", "en", "en_US", "lessac"), ("fa_IR-amir-medium", "fa", "fa_IR", "amir"),
        ("fa_IR-gyro-medium", "fa", "fa_IR", "gyro")]
    assert [(passed.path.name, passed.reason, passed.problem) for passed in catalog.skipped] == [
        ("de_DE-thorsten-medium.onnx", "speaks 'de_DE'; this service speaks only fa and en", "other_language")]


def test_a_mixed_request_has_its_persian_run_said_by_a_fa_voice_and_its_english_run_by_an_en_voice(
        engine: PiperEngine) -> None:
    segments = spoken(engine, TextRequest(session_id="s", avatar_id="a", text=MIXED, tts="piper"))
    said = [(s.meta.language, s.meta.voice, round(dominant_hz(s) / 50) * 50) for s in segments]
    assert said == [("fa", "fa_IR-amir-medium", PERSIAN_HZ), ("en", "en_US-lessac-medium", ENGLISH_HZ),
                    ("fa", "fa_IR-amir-medium", PERSIAN_HZ), ("en", "en_US-lessac-medium", ENGLISH_HZ)]
    assert all(s.meta.engine == "piper" and s.meta.phonemes for s in segments), "timings from the alignments"


def test_a_request_naming_a_persian_voice_gets_it_for_persian_and_the_english_default_for_english(
        engine: PiperEngine) -> None:
    segments = spoken(engine, TextRequest(session_id="s", avatar_id="a", text=MIXED, tts="piper",
                                          voice="fa_IR-gyro-medium"))
    assert [(s.meta.language, s.meta.voice) for s in segments] == [
        ("fa", "fa_IR-gyro-medium"), ("en", "en_US-lessac-medium"), ("fa", "fa_IR-gyro-medium"),
        ("en", "en_US-lessac-medium")]
    assert round(dominant_hz(segments[0])) == pytest.approx(SECOND_PERSIAN_HZ, abs=25)


def test_the_configured_persian_default_speaks_when_the_request_names_no_voice(folder: Path, tmp_path: Path) -> None:
    chosen = catalog_engine(folder, tmp_path, fa="fa_IR-gyro-medium")
    assert chosen.synthesize("سلام", "fa").voice == "fa_IR-gyro-medium"
    assert [(entry.voice, entry.default) for entry in chosen.voice_list()] == [
        ("en_US-lessac-medium", True), ("fa_IR-amir-medium", False), ("fa_IR-gyro-medium", True)]


def test_a_default_voice_not_in_the_catalog_or_of_another_language_stops_start_up(folder: Path,
                                                                                   tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="PIPER_VOICE_FA: no fa voice 'fa_IR-mana-medium'"):
        catalog_engine(folder, tmp_path, fa="fa_IR-mana-medium")
    with pytest.raises(EngineConfigError, match="PIPER_VOICE_EN: no en voice 'fa_IR-amir-medium'"):
        catalog_engine(folder, tmp_path, en="fa_IR-amir-medium")


def test_a_voice_not_in_the_catalog_is_refused_up_front_naming_the_voices_there(engine: PiperEngine) -> None:
    with pytest.raises(UnknownVoice, match="fa_IR-amir-medium, fa_IR-gyro-medium"):
        engine.check_voice("fa_IR-reza_ibrahim-medium")
    events = list(TtsCore(engine, max_text_chars=2000).handle(
        TextRequest(session_id="s", avatar_id="a", text="سلام", tts="piper", voice="alloy")))
    assert [(e.code, "GET /avatar/voices" in e.message) for e in events if isinstance(e, SessionError)] == [
        ("unknown_voice", True)]


def test_a_faster_rate_shortens_the_speech_and_its_phoneme_timings_alike(engine: PiperEngine) -> None:
    normal = engine.synthesize("سلام دوست من", "fa")
    fast = engine.synthesize("سلام دوست من", "fa", rate=2.0)
    slow = engine.synthesize("سلام دوست من", "fa", rate=0.5)
    assert len(fast.pcm) < 0.75 * len(normal.pcm) and len(slow.pcm) > 1.8 * len(normal.pcm)
    for speech in (normal, fast, slow):
        assert [name for _, name in speech.phonemes] == [name for _, name in normal.phonemes]
        assert speech.phonemes[-1][0] <= len(speech.pcm)
    # each phoneme's start moves with the rate (ceil of a whole frame count makes 2x a little less than half)
    ratio = [f / n for (f, _), (n, _) in zip(fast.phonemes[1:], normal.phonemes[1:], strict=True)]
    assert all(0.5 <= r <= 0.7 for r in ratio), ratio
    assert all(s == 2 * n for (s, _), (n, _) in zip(slow.phonemes, normal.phonemes, strict=True))


def test_rate_reaches_the_segment_and_its_marks_stay_within_it(engine: PiperEngine) -> None:
    normal, fast = (spoken(engine, TextRequest(session_id="s", avatar_id="a", text="سلام دوست من.", tts="piper",
                                               rate=rate))[0] for rate in (1.0, 1.6))
    assert fast.meta.sample_count < normal.meta.sample_count
    marks = fast.meta.phonemes or []
    assert marks[-1][1] == PAUSE and marks[-1][0] <= fast.meta.sample_count


def test_piper_model_alone_still_works_and_comes_first_in_the_catalog(folder: Path, tmp_path: Path) -> None:
    single = build_voice(tmp_path / "elsewhere", "fa_IR", "ganji")
    engine = build_piper(folder, single, defaults={"fa": "", "en": ""}, threads=1, cache_dir=tmp_path / "cache",
                         packaged=False)
    assert engine.synthesize("سلام", "fa").voice == "fa_IR-ganji-medium"
    only = build_piper(None, single, defaults={"fa": "", "en": ""}, threads=1, cache_dir=None, packaged=False)
    assert list(only.voices) == ["fa_IR-ganji-medium"] and only.languages == frozenset({"fa"})


def test_a_piper_model_that_is_missing_or_lacks_its_json_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="PIPER_MODEL: no voice file"):
        build_piper(None, tmp_path / "missing.onnx", defaults={}, threads=1, cache_dir=None, packaged=False)
    lone = build_voice(tmp_path, "en_US", "ryan")
    lone.with_name(lone.name + ".json").unlink()
    with pytest.raises(EngineConfigError, match=r"PIPER_MODEL: en_US-ryan-medium\.onnx has no "
                                                r"en_US-ryan-medium\.onnx\.json beside it"):
        build_piper(None, lone, defaults={}, threads=1, cache_dir=None, packaged=False)


def test_a_voice_file_without_its_json_is_passed_over_with_a_warning(folder: Path, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    copy = tmp_path / "voices"
    shutil.copytree(folder, copy)
    (copy / "fa_IR-gyro-medium.onnx.json").unlink()
    with caplog.at_level(logging.WARNING):
        engine = catalog_engine(copy, tmp_path)
    assert "fa_IR-gyro-medium" not in engine.voices
    assert any(getattr(record, "path", "").endswith("fa_IR-gyro-medium.onnx") for record in caplog.records)


def test_an_empty_catalog_stops_start_up_saying_how_to_install_a_voice(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match=r"download_models\.py --piper-voice"):
        build_piper(tmp_path / "empty", None, defaults={}, threads=1, cache_dir=None, packaged=False)


def test_a_catalog_with_persian_and_english_needs_no_espeak_and_lists_every_voice(folder: Path) -> None:
    engines = build_engines(Settings(tts_engine="piper", piper_voices_dir=folder, _env_file=None))
    assert engines.names == ["piper"], "piper speaks both languages: no espeak-ng fallback is added"
    listed = {(entry.tts, entry.voice, tuple(entry.languages)) for entry in engines.voice_list()}
    assert {("piper", "fa_IR-amir-medium", ("fa",)), ("piper", "en_US-lessac-medium", ("en",))} <= listed


def test_a_url_in_a_persian_sentence_is_said_by_the_english_voice(engine: PiperEngine) -> None:
    segments = spoken(engine, TextRequest(session_id="s", avatar_id="a", tts="piper", language="fa",
                                          text="مقاله را در https://fa.wikipedia.org/wiki/تهران بخوانید."))
    assert [(s.meta.voice, s.meta.spoken) for s in segments] == [
        ("fa_IR-amir-medium", "مقاله را در"), ("en_US-lessac-medium", "fa dot wikipedia dot org"),
        ("fa_IR-amir-medium", "بخوانید.")]


def test_a_voice_whose_graph_does_not_take_pipers_inputs_stops_start_up(tmp_path: Path) -> None:
    model = build_voice(tmp_path / "voices", "fa_IR", "odd")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["output"])], "not_piper",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(graph), str(model))
    with pytest.raises(EngineConfigError, match=r"fa_IR-odd-medium\.onnx does not run"):
        build_piper(tmp_path / "voices", None, defaults={}, threads=1, cache_dir=None, packaged=False)
