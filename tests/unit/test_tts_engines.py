"""TTS backends are chosen in settings, built at start-up, and refuse to start when not configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import PROJECT_ROOT, Settings
from processors.tts.engines import espeak, espeak_library
from processors.tts.engines.base import EngineConfigError
from processors.tts.engines.espeak import EspeakConfigError, EspeakEngine
from processors.tts.engines.registry import build_engines
from processors.tts.main import TtsConfigError, build_core, build_engine_set

SENTENCE = "The weather in Tehran is sunny today."


def test_espeak_rate_setting_changes_how_fast_it_speaks() -> None:
    slow = EspeakEngine(rate_wpm=120).synthesize(SENTENCE, "en")
    fast = EspeakEngine(rate_wpm=260).synthesize(SENTENCE, "en")
    assert fast.duration_s < 0.7 * slow.duration_s


def test_espeak_pitch_setting_changes_the_voice() -> None:
    low = EspeakEngine(pitch=20).synthesize(SENTENCE, "en")
    high = EspeakEngine(pitch=80).synthesize(SENTENCE, "en")
    assert low.pcm.tobytes() != high.pcm.tobytes()


def test_espeak_voice_settings_choose_the_voice_per_language() -> None:
    british = EspeakEngine(voices={"en": "en-gb"}).synthesize(SENTENCE, "en")
    american = EspeakEngine().synthesize(SENTENCE, "en")
    assert british.pcm.tobytes() != american.pcm.tobytes()


def test_espeak_with_a_voice_it_lacks_refuses_to_start_naming_the_setting() -> None:
    with pytest.raises(EspeakConfigError, match="ESPEAK_VOICE_FA"):
        EspeakEngine(voices={"fa": "no-such-language"})


def test_espeak_missing_library_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise espeak_library.EspeakLibraryError("libespeak-ng not found: install the Debian package espeak-ng")

    monkeypatch.setattr(espeak, "shared_library", missing)
    with pytest.raises(EspeakConfigError, match="install the Debian package espeak-ng"):
        EspeakEngine()


def test_espeak_with_a_variant_it_lacks_refuses_to_start_naming_the_setting() -> None:
    with pytest.raises(EspeakConfigError, match="ESPEAK_VOICE_EN"):
        EspeakEngine(voices={"en": "en-us+no-such-variant"})


def test_espeak_speaks_in_process_without_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("espeak-ng must not run as a subprocess")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    speech = EspeakEngine().synthesize(SENTENCE, "en", "f3")
    assert speech.duration_s > 1.0 and speech.phonemes


def test_default_settings_run_espeak_only() -> None:
    engines = build_engines(Settings())
    assert engines.names == ["espeak"] and engines.default.name == "espeak"


def test_extra_engines_follow_the_default_once_each() -> None:
    settings = Settings(tts_engine="espeak", tts_extra_engines=" openai , espeak,openai")
    assert settings.selected_tts_engines == ["espeak", "openai"]


@pytest.mark.parametrize(("field", "value"), [("tts_extra_engines", "espeak,google"), ("tts_engine", "google")])
def test_unknown_engine_names_are_rejected_by_the_settings(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: value})


def test_openai_selected_without_a_key_fails_at_start_up_with_a_clear_message() -> None:
    with pytest.raises(TtsConfigError, match=r"TTS engine 'openai'.*OPENAI_API_KEY"):
        build_engine_set(Settings(tts_engine="openai"))


def test_openai_as_an_extra_engine_without_a_key_fails_at_start_up_too() -> None:
    with pytest.raises(TtsConfigError, match="OPENAI_API_KEY"):
        build_engine_set(Settings(tts_extra_engines="openai"))


def test_piper_with_a_missing_voice_file_fails_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    with pytest.raises(EngineConfigError, match="PIPER_MODEL"):
        build_engines(Settings(tts_engine="piper", piper_model=tmp_path / "missing.onnx"))


def test_settings_reach_the_core() -> None:
    core = build_core(Settings(tts_first_piece_chars=30, tts_piece_chars=90, tts_loudness_dbfs=-18.0,
                               max_text_chars=500))
    assert (core.first_piece_chars, core.piece_chars, core.loudness.rms_dbfs, core.max_text_chars) == (
        30, 90, -18.0, 500)


def test_the_tts_process_refuses_to_start_with_a_selected_backend_unconfigured() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "TTS_"))}
    env.update(TTS_ENGINE="openai", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", LOG_LEVEL="ERROR")
    done = subprocess.run([sys.executable, "-m", "processors.tts.main"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "tts processor cannot start" in done.stderr and "OPENAI_API_KEY" in done.stderr
