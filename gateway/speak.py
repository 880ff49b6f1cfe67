"""The one door for a request, text or audio, WebSocket or REST: the checks, the avatar and its voice, then Kafka."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.auth import Principal
from gateway.voice import effective_voice
from infra.avatar_store import AvatarStore
from infra.settings import Settings
from producers.audio import AudioError, UtteranceTarget, check_format
from producers.client import AvatarProducer, ProduceError
from schemas.avatar import VoiceChoice
from schemas.common import Language
from schemas.requests import rate_problem
from schemas.speech import SpeechSegment

LANGUAGES: dict[str | None, Language | None] = {"fa": "fa", "en": "en", None: None}


class Refusal(Exception):
    """A request the gateway does not pass on: a stable error code and a sentence for people."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id  # the request it concerns, when one was accepted already (audio)

    @classmethod
    def of_audio(cls, error: AudioError, request_id: str | None = None) -> Refusal:
        return cls(error.code, error.message, request_id)


@dataclass(frozen=True)
class UsableAvatar:
    """An avatar the caller may speak with, and the default voice it was registered with."""

    avatar_id: str
    voice: VoiceChoice


@dataclass(frozen=True)
class Admitted:
    """A request that passed the door: what to say, in which language, with which backend and voice."""

    avatar_id: str
    text: str
    language: Language | None
    voice: VoiceChoice
    rate: float | None = None  # the speaking rate; absent = normal


async def usable_avatar(store: AvatarStore, who: Principal, avatar_id: str) -> UsableAvatar:
    """The avatar if it exists and ``who`` may use it; another user's avatar is refused as if it did not exist."""
    found = await asyncio.to_thread(store.owner_and_voice, avatar_id)
    if found is None or not who.may_use(found[0]):  # so ids cannot be probed
        raise Refusal("unknown_avatar", f"no registered avatar with id '{avatar_id}'")
    return UsableAvatar(avatar_id, found[1])


def admit(settings: Settings, avatar: UsableAvatar, text: str, language: str | None,
          asked: VoiceChoice, rate: float | None = None) -> Admitted:
    """Check a text request; the request's backend and voice win over the avatar's default."""
    spoken = text.strip()
    if not spoken:
        raise Refusal("empty_text", "text is empty")
    if len(spoken) > settings.max_text_chars:
        raise Refusal("text_too_long", f"text has {len(spoken)} characters; the limit is {settings.max_text_chars}")
    if language not in LANGUAGES:
        raise Refusal("unsupported_language", f"language {language!r} is not supported; use 'fa', 'en', or omit "
                                              "it to auto-detect")
    problem = rate_problem(rate)
    if problem is not None:
        raise Refusal("invalid_rate", problem)
    voice = effective_voice(asked, avatar.voice, settings.tts_engine)
    return Admitted(avatar.avatar_id, spoken, LANGUAGES[language], voice, rate)


async def send(producer: AvatarProducer, admitted: Admitted, *, session_id: str, request_id: str) -> None:
    """Hand an admitted request to Kafka, keyed by its session; a broker that does not take it is a Refusal."""
    try:
        await asyncio.to_thread(producer.send_text, session_id=session_id, avatar_id=admitted.avatar_id,
                                text=admitted.text, language=admitted.language, request_id=request_id,
                                tts=admitted.voice.tts, voice=admitted.voice.voice, rate=admitted.rate)
    except ProduceError as error:
        raise Refusal("unavailable", f"the request could not be queued: {error}") from None


@dataclass(frozen=True)
class AdmittedAudio:
    """An utterance of the agent's own audio that passed the door: whose, at which rate, labelled how."""

    avatar_id: str
    sample_rate: int
    language: Language
    text: str

    def target(self, *, session_id: str, request_id: str) -> UtteranceTarget:
        return UtteranceTarget(request_id=request_id, session_id=session_id, avatar_id=self.avatar_id,
                               sample_rate=self.sample_rate, language=self.language, text=self.text)


def admit_audio(settings: Settings, avatar: UsableAvatar, sample_rate: int, *, sample_format: str = "pcm_s16le",
                channels: int = 1, language: str | None = None, text: str | None = None) -> AdmittedAudio:
    """Check an utterance's format and labels; its samples are checked as they come (producers/audio.py)."""
    try:
        check_format(sample_rate, sample_format, channels)
    except AudioError as error:
        raise Refusal.of_audio(error) from None
    if language not in LANGUAGES:
        raise Refusal("unsupported_language", f"language {language!r} is not supported; use 'fa', 'en', or omit it")
    subtitle = (text or "").strip()
    if len(subtitle) > settings.max_text_chars:
        raise Refusal("text_too_long", f"text has {len(subtitle)} characters; the limit is {settings.max_text_chars}")
    # The language only labels the segments (the lip-sync reads the sound): absent, the service's first language.
    return AdmittedAudio(avatar.avatar_id, sample_rate, LANGUAGES[language] or "fa", subtitle)


def check_message_length(settings: Settings, pcm_bytes: int, sample_rate: int) -> None:
    """Refuse one message holding more than AUDIO_MAX_MESSAGE_S of audio (the utterance may be longer)."""
    seconds = pcm_bytes / 2 / sample_rate
    if seconds > settings.audio_max_message_s:
        raise Refusal("audio_message_too_long", f"one message holds {seconds:.1f} s of audio; at most "
                                                f"{settings.audio_max_message_s:g} s a message (AUDIO_MAX_MESSAGE_S): "
                                                "send it in smaller chunks")


async def send_segments(producer: AvatarProducer, segments: list[SpeechSegment]) -> None:
    """Hand an utterance's segments to the speech topic, in order; a broker that does not take them is a Refusal."""
    if not segments:
        return
    try:
        await asyncio.to_thread(producer.send_segments, segments)
    except ProduceError as error:
        raise Refusal("unavailable", f"the audio could not be queued: {error}", segments[0].meta.request_id) from None
