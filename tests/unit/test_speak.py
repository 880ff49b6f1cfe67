"""The one door for a text request (gateway/speak.py): each refusal with its code, the voice, the broker's answer."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth import ADMIN, Principal
from gateway.speak import Admitted, Refusal, UsableAvatar, admit, admit_audio, check_message_length, send, usable_avatar
from infra.settings import Settings
from producers.client import ProduceError
from schemas.avatar import VoiceChoice

SETTINGS = Settings(_env_file=None, max_text_chars=20)
ALICE = Principal(user_id="alice", is_admin=False)
NO_CHOICE = VoiceChoice()
SAMPLE = UsableAvatar("sample", VoiceChoice(tts="espeak", voice="f3"))


class Avatars:
    """owner_and_voice over a dict, as AvatarStore answers it."""

    def __init__(self, rows: dict[str, tuple[str, VoiceChoice]]) -> None:
        self.rows = rows

    def owner_and_voice(self, avatar_id: str) -> tuple[str, VoiceChoice] | None:
        return self.rows.get(avatar_id)


class Producer:
    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure
        self.sent: list[dict[str, Any]] = []

    def send_text(self, **fields: Any) -> None:
        if self.failure:
            raise ProduceError(self.failure)
        self.sent.append(fields)


def refusal_code(text: str, language: str | None = None) -> str:
    with pytest.raises(Refusal) as raised:
        admit(SETTINGS, SAMPLE, text, language, NO_CHOICE)
    assert raised.value.message
    return raised.value.code


def test_a_text_is_spoken_stripped_in_its_language_with_the_avatars_voice() -> None:
    assert admit(SETTINGS, SAMPLE, "  سلام  ", "fa", NO_CHOICE) == Admitted(
        "sample", "سلام", "fa", VoiceChoice(tts="espeak", voice="f3"))


def test_the_requests_voice_wins_over_the_avatars() -> None:
    admitted = admit(SETTINGS, SAMPLE, "hello", None, VoiceChoice(voice="m3"))
    assert admitted.voice == VoiceChoice(tts="espeak", voice="m3") and admitted.language is None


@pytest.mark.parametrize(("text", "language", "code"), [
    ("   ", None, "empty_text"),
    ("x" * 21, None, "text_too_long"),
    ("hello", "de", "unsupported_language"),
])
def test_each_bad_request_is_refused_with_its_code(text: str, language: str | None, code: str) -> None:
    assert refusal_code(text, language) == code


async def test_another_users_avatar_is_refused_exactly_like_a_missing_one() -> None:
    avatars: Any = Avatars({"bobs": ("bob", NO_CHOICE), "shared": ("system", SAMPLE.voice)})
    refusals = []
    for avatar_id in ("bobs", "ghost"):
        with pytest.raises(Refusal) as raised:
            await usable_avatar(avatars, ALICE, avatar_id)
        refusals.append((raised.value.code, raised.value.message.replace(avatar_id, "<id>")))
    assert refusals[0] == refusals[1] == ("unknown_avatar", "no registered avatar with id '<id>'")
    assert await usable_avatar(avatars, ALICE, "shared") == UsableAvatar("shared", SAMPLE.voice)
    assert await usable_avatar(avatars, ADMIN, "bobs") == UsableAvatar("bobs", NO_CHOICE)


async def test_an_admitted_request_goes_to_kafka_keyed_by_its_session() -> None:
    producer: Any = Producer()
    await send(producer, admit(SETTINGS, SAMPLE, "hello", "en", NO_CHOICE), session_id="s1", request_id="r1")
    assert producer.sent == [{"session_id": "s1", "avatar_id": "sample", "text": "hello", "language": "en",
                              "request_id": "r1", "tts": "espeak", "voice": "f3", "rate": None}]


async def test_a_broker_that_does_not_take_the_request_is_an_unavailable_refusal() -> None:
    producer: Any = Producer(failure="broker unreachable")
    with pytest.raises(Refusal) as raised:
        await send(producer, admit(SETTINGS, SAMPLE, "hello", None, NO_CHOICE), session_id="s1", request_id="r1")
    assert raised.value.code == "unavailable" and "broker unreachable" in raised.value.message


@pytest.mark.parametrize(("fields", "code"), [
    ({"sample_rate": 44_100}, "unsupported_sample_rate"),
    ({"sample_rate": 16_000, "sample_format": "pcm_f32le"}, "unsupported_sample_format"),
    ({"sample_rate": 16_000, "channels": 2}, "unsupported_sample_format"),
    ({"sample_rate": 16_000, "language": "de"}, "unsupported_language"),
    ({"sample_rate": 16_000, "text": "a" * 21}, "text_too_long"),
])
def test_each_bad_utterance_is_refused_at_the_door_with_its_code(fields: dict[str, Any], code: str) -> None:
    rate = fields.pop("sample_rate")
    with pytest.raises(Refusal) as raised:
        admit_audio(SETTINGS, SAMPLE, rate, **fields)
    assert raised.value.code == code and raised.value.message


def test_an_utterance_is_labelled_persian_unless_told_otherwise() -> None:
    assert admit_audio(SETTINGS, SAMPLE, 24_000).language == "fa"
    admitted = admit_audio(SETTINGS, SAMPLE, 24_000, language="en", text=" Hello ")
    assert (admitted.language, admitted.text, admitted.sample_rate) == ("en", "Hello", 24_000)


def test_one_message_of_more_audio_than_the_bound_is_refused() -> None:
    settings = Settings(_env_file=None, audio_max_message_s=2.0)
    check_message_length(settings, 2 * 32_000, 16_000)
    with pytest.raises(Refusal) as raised:
        check_message_length(settings, 2 * 10 * 60 * 16_000, 16_000)  # ten minutes in one message
    assert raised.value.code == "audio_message_too_long" and "AUDIO_MAX_MESSAGE_S" in raised.value.message
