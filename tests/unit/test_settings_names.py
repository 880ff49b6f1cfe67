"""The brief's variable names are honoured or refused, sizes take units, typos are warned about, names are env names."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import (
    Settings,
    SettingsError,
    effective_configuration,
    load_settings,
    setting_prefixes,
    unknown_variable_warnings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of ours from the runner's environment, and no .env file."""
    for name in [*Settings.model_fields, "avatar_cache_size", "model_cache_size", "chunk_buffer_size",
                 "skip_model_loading"]:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("variable", "given", "expected"), [
    ("AVATAR_CACHE_MAX_BYTES", "1GB", 10**9), ("AVATAR_CACHE_MAX_BYTES", "512MiB", 512 * 2**20),
    ("AVATAR_CACHE_MAX_BYTES", "1gib", 2**30), ("AVATAR_CACHE_MAX_BYTES", "3000000", 3_000_000),
    ("MAX_UPLOAD_BYTES", "20MB", 20 * 10**6), ("MAX_UPLOAD_BYTES", "64KiB", 64 * 1024),
    ("KAFKA_MAX_MESSAGE_BYTES", "32MiB", 32 * 2**20), ("GPU_MEMORY_LIMIT", "20GB", 20 * 10**9),
    ("GPU_MEMORY_LIMIT", "1.5 GiB", int(1.5 * 2**30)),
])
def test_every_size_setting_takes_units(monkeypatch: pytest.MonkeyPatch, variable: str, given: str,
                                        expected: int) -> None:
    monkeypatch.setenv(variable, given)
    value = getattr(load_settings(), variable.lower())
    assert value == expected and type(value) is int


def test_a_size_that_is_not_one_names_the_variable_and_the_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_CACHE_MAX_BYTES", "lots")
    with pytest.raises(SettingsError, match=r"AVATAR_CACHE_MAX_BYTES='lots': .*not a size.*MiB"):
        load_settings()


def test_a_size_below_the_minimum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_CACHE_MAX_BYTES", "1KB")
    with pytest.raises(SettingsError, match="AVATAR_CACHE_MAX_BYTES"):
        load_settings()


def test_the_briefs_avatar_cache_size_is_the_avatar_cache_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_CACHE_SIZE", "1GB")
    assert load_settings().avatar_cache_max_bytes == 10**9


def test_the_brief_name_and_ours_disagreeing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_CACHE_SIZE", "1GB")
    monkeypatch.setenv("AVATAR_CACHE_MAX_BYTES", "2GB")
    with pytest.raises(SettingsError, match="set AVATAR_CACHE_MAX_BYTES only"):
        load_settings()


@pytest.mark.parametrize(("name", "instead"), [("MODEL_CACHE_SIZE", "GPU_MEMORY_LIMIT"),
                                               ("CHUNK_BUFFER_SIZE", "WS_MAX_PENDING_MESSAGES")])
def test_brief_names_with_no_meaning_here_are_refused_saying_what_to_use(
        monkeypatch: pytest.MonkeyPatch, name: str, instead: str) -> None:
    monkeypatch.setenv(name, "4GB")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert f"{name}: not used by this service" in str(raised.value) and instead in str(raised.value)


def test_skip_model_loading_means_the_embedded_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIP_MODEL_LOADING", "true")
    assert load_settings().lipsync_engine == "embedded"
    monkeypatch.setenv("LIPSYNC_ENGINE", "wav2lip")
    with pytest.raises(SettingsError, match="SKIP_MODEL_LOADING: set LIPSYNC_ENGINE only"):
        load_settings()
    monkeypatch.setenv("SKIP_MODEL_LOADING", "false")
    assert load_settings().lipsync_engine == "wav2lip"
    monkeypatch.setenv("SKIP_MODEL_LOADING", "maybe")
    with pytest.raises(SettingsError, match="SKIP_MODEL_LOADING='maybe'"):
        load_settings()


def test_brief_names_in_the_env_file_count_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AVATAR_CACHE_SIZE=300MiB\n", encoding="utf-8")
    assert load_settings().avatar_cache_max_bytes == 300 * 2**20
    (tmp_path / ".env").write_text("MODEL_CACHE_SIZE=4GB\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="MODEL_CACHE_SIZE"):
        load_settings()


def test_a_typo_of_one_of_our_names_is_warned_with_the_closest(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AVATAR_CACHE_MAX_BYTE", "1GB")
    monkeypatch.setenv("LIPSYNC_ENGIN", "wav2lip")
    load_settings()
    err = capsys.readouterr().err
    assert "AVATAR_CACHE_MAX_BYTE is not a setting of this service and is ignored; did you mean " \
           "AVATAR_CACHE_MAX_BYTES?" in err
    assert "did you mean LIPSYNC_ENGINE?" in err


def test_only_our_prefixes_are_checked() -> None:
    prefixes = setting_prefixes()
    assert {"AVATAR_", "LIPSYNC_", "TTS_", "KAFKA_", "DATABASE_", "WAV2LIP_", "PIPER_", "ESPEAK_",
            "OPENAI_"} <= prefixes
    given = {"PATH": "/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0", "OPENAI_ORG_ID": "x",
             "TTS_ENGINE": "espeak", "PIPER_VOICE": "x"}
    warnings = unknown_variable_warnings(given)
    assert len(warnings) == 1 and warnings[0].startswith("warning: PIPER_VOICE ")


def test_the_configuration_is_printed_by_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "secret-admin-token-0123456789")
    printed = effective_configuration(load_settings())
    assert "PORT=5002\n" in printed and "KAFKA_BOOTSTRAP_SERVERS=\n" in printed
    assert "ADMIN_TOKEN=(set)\n" in printed and "secret-admin-token" not in printed
    assert "OPENAI_API_KEY=\n" in printed
    assert "port=" not in printed
