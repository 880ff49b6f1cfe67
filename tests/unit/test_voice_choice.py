"""Which TTS backend and voice a request speaks with: request > avatar's default > settings (gateway/voice.py)."""

from __future__ import annotations

import pytest

from gateway.voice import (
    VoiceRefused,
    changed_default,
    check_listed,
    default_for_avatar,
    effective_voice,
    parse_voice_choice,
)
from infra.settings import Settings
from schemas.avatar import VoiceChoice
from schemas.status import VoiceEntry

NONE = VoiceChoice()
ESPEAK_F3 = VoiceChoice(tts="espeak", voice="f3")


def settings(engine: str = "espeak", extras: str = "") -> Settings:
    return Settings(_env_file=None, tts_engine=engine, tts_extra_engines=extras)


def test_without_any_choice_the_processor_settings_decide() -> None:
    assert effective_voice(NONE, NONE, "espeak") == NONE


def test_an_avatar_default_applies_when_the_request_names_nothing() -> None:
    assert effective_voice(NONE, ESPEAK_F3, "espeak") == ESPEAK_F3


def test_the_request_voice_wins_over_the_avatar_voice_on_the_avatar_backend() -> None:
    asked = VoiceChoice(voice="m3")
    assert effective_voice(asked, ESPEAK_F3, "espeak") == VoiceChoice(tts="espeak", voice="m3")
    assert effective_voice(asked, VoiceChoice(tts="openai", voice="nova"), "espeak") == VoiceChoice(
        tts="openai", voice="m3")


def test_the_request_backend_wins_and_drops_the_avatar_voice_of_another_backend() -> None:
    asked = VoiceChoice(tts="openai")
    assert effective_voice(asked, ESPEAK_F3, "espeak") == VoiceChoice(tts="openai", voice=None)
    assert effective_voice(VoiceChoice(tts="openai", voice="nova"), ESPEAK_F3, "espeak") == VoiceChoice(
        tts="openai", voice="nova")


def test_naming_the_avatar_backend_again_keeps_the_avatar_voice() -> None:
    assert effective_voice(VoiceChoice(tts="espeak"), ESPEAK_F3, "espeak") == ESPEAK_F3


def test_an_avatar_voice_without_a_backend_counts_as_the_deployment_default_backend() -> None:
    bare = VoiceChoice(voice="f3")
    assert effective_voice(VoiceChoice(tts="espeak"), bare, "espeak") == VoiceChoice(tts="espeak", voice="f3")
    assert effective_voice(VoiceChoice(tts="piper"), bare, "espeak") == VoiceChoice(tts="piper", voice=None)


def test_form_fields_are_validated_like_request_fields_and_blank_means_absent() -> None:
    assert parse_voice_choice({"tts": "espeak", "voice": "f3"}) == ESPEAK_F3
    assert parse_voice_choice({"tts": " ", "voice": ""}) == NONE
    assert parse_voice_choice({}) == NONE


@pytest.mark.parametrize(("fields", "named"), [
    ({"tts": "sam"}, "tts"),
    ({"tts": "ESPEAK"}, "tts"),
    ({"voice": "../../voices/x"}, "voice"),
    ({"voice": "v" * 65}, "voice"),
])
def test_a_bad_form_field_is_refused_naming_it(fields: dict[str, str], named: str) -> None:
    with pytest.raises(VoiceRefused) as refused:
        parse_voice_choice(fields)
    assert refused.value.code == "invalid_field" and refused.value.message.startswith(named)


def test_an_avatar_stores_its_voice_with_the_backend_enabled_here() -> None:
    assert default_for_avatar(VoiceChoice(voice="f3"), settings()) == ESPEAK_F3
    assert default_for_avatar(VoiceChoice(tts="openai"), settings("espeak", "openai")) == VoiceChoice(tts="openai")
    assert default_for_avatar(NONE, settings()) == NONE


def test_a_backend_not_enabled_on_this_deployment_is_refused_naming_the_enabled_ones() -> None:
    with pytest.raises(VoiceRefused) as refused:
        default_for_avatar(VoiceChoice(tts="openai", voice="nova"), settings("espeak", "piper"))
    assert refused.value.code == "tts_unavailable"
    assert "espeak, piper" in refused.value.message


def test_changing_a_default_replaces_the_given_fields_and_null_clears() -> None:
    assert changed_default(ESPEAK_F3, VoiceChoice(voice="m3")) == VoiceChoice(tts="espeak", voice="m3")
    assert changed_default(ESPEAK_F3, VoiceChoice.model_validate({"voice": None})) == VoiceChoice(tts="espeak")
    assert changed_default(ESPEAK_F3, VoiceChoice.model_validate({"tts": None, "voice": None})) == NONE
    assert changed_default(ESPEAK_F3, VoiceChoice()) == ESPEAK_F3


def test_changing_only_the_backend_drops_the_voice_of_the_old_one() -> None:
    assert changed_default(ESPEAK_F3, VoiceChoice(tts="openai")) == VoiceChoice(tts="openai")
    assert changed_default(ESPEAK_F3, VoiceChoice(tts="espeak")) == ESPEAK_F3


LISTED = [VoiceEntry(tts="piper", voice="fa_IR-amir-medium", languages=["fa"]),
          VoiceEntry(tts="espeak", voice="f3", languages=["fa", "en"])]


def test_an_avatar_default_voice_must_be_one_its_backend_announces() -> None:
    check_listed(VoiceChoice(tts="piper", voice="fa_IR-amir-medium"), LISTED)
    with pytest.raises(VoiceRefused) as refused:
        check_listed(VoiceChoice(tts="piper", voice="fa_IR-amri-medium"), LISTED)
    assert refused.value.code == "unknown_voice" and "fa_IR-amir-medium" in refused.value.message


def test_a_voice_is_not_judged_without_a_list_for_its_backend_nor_for_openai() -> None:
    check_listed(VoiceChoice(tts="piper", voice="anything"), [])  # no TTS processor announced piper's voices
    check_listed(VoiceChoice(tts="openai", voice="nova"), LISTED)  # OpenAI's server judges its own
    check_listed(VoiceChoice(tts="piper", voice="default"), LISTED)
    check_listed(VoiceChoice(tts="espeak"), LISTED)
