"""Which TTS backend and voice a request speaks with: its own choice, else its avatar's default, else settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from infra.settings import Settings
from schemas.avatar import VoiceChoice
from schemas.status import VoiceEntry

NO_CHOICE = VoiceChoice()


class VoiceRefused(ValueError):
    """A default voice this deployment cannot speak with, with the error code to answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def effective_voice(asked: VoiceChoice, avatar_default: VoiceChoice, deployment_default: str) -> VoiceChoice:
    """What goes on the request: the request's backend and voice win over the avatar's default.

    A field left absent here means the TTS processor's settings decide (TTS_ENGINE, ESPEAK_*/OPENAI_TTS_VOICE).
    A voice belongs to a backend: the avatar's voice is kept only when the request speaks with the avatar's
    backend (``deployment_default`` stands for an absent backend when comparing); a voice the request names
    without a backend is spoken by the avatar's backend.
    """
    tts = asked.tts or avatar_default.tts
    if asked.voice is not None:
        return VoiceChoice(tts=tts, voice=asked.voice)
    same_backend = (tts or deployment_default) == (avatar_default.tts or deployment_default)
    return VoiceChoice(tts=tts, voice=avatar_default.voice if same_backend else None)


def parse_voice_choice(fields: Mapping[str, object]) -> VoiceChoice:
    """``tts`` and ``voice`` validated like a request's fields (blank = absent); VoiceRefused names the field."""
    given = {name: value for name in ("tts", "voice")
             if (value := _blank_is_absent(fields.get(name))) is not None}
    try:
        return VoiceChoice.model_validate(given)
    except ValidationError as error:
        problem = error.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "tts"
        if field == "tts":
            raise VoiceRefused("invalid_field", "tts must be one of espeak, openai, piper "
                                                f"(got {given.get('tts')!r}).") from None
        raise VoiceRefused("invalid_field", f"{field} must be 1-64 letters, digits and _ + . - "
                                            f"(got {given.get(field)!r}).") from None


def default_for_avatar(choice: VoiceChoice, settings: Settings) -> VoiceChoice:
    """The choice as an avatar stores it: its backend enabled here and named (a bare voice is TTS_ENGINE's).

    Storing the backend with the voice keeps the voice meaningful if TTS_ENGINE changes later.
    """
    if choice.tts is None and choice.voice is None:
        return NO_CHOICE
    tts = choice.tts or settings.tts_engine
    enabled = settings.selected_tts_engines
    if tts not in enabled:
        raise VoiceRefused("tts_unavailable", f"TTS backend '{tts}' is not enabled on this deployment; enabled: "
                                          f"{', '.join(enabled)} (TTS_ENGINE, TTS_EXTRA_ENGINES).")
    return VoiceChoice(tts=tts, voice=choice.voice)


def check_listed(choice: VoiceChoice, listed: Iterable[VoiceEntry]) -> None:
    """An avatar's default voice must be one its backend's TTS processors announce (GET /avatar/voices), so a typo
    fails when it is stored rather than on every request of the avatar.

    Only backends that list every voice are checked (piper's catalog, espeak-ng's variants; OpenAI's server
    judges its own), and only when a live processor announced that backend's voices: with none running there is
    nothing to check against, and the TTS processor still refuses an unknown voice (`unknown_voice`).
    """
    if choice.voice is None or choice.tts in (None, "openai") or choice.voice == "default":
        return
    names = sorted({entry.voice for entry in listed if entry.tts == choice.tts})
    if names and choice.voice not in names:
        shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
        raise VoiceRefused("unknown_voice", f"TTS backend '{choice.tts}' has no voice '{choice.voice}'; it has "
                                            f"{shown} (GET /avatar/voices).")


def changed_default(current: VoiceChoice, change: VoiceChoice) -> VoiceChoice:
    """``current`` with the fields ``change`` sets (null clears); a new backend without a voice drops the old voice."""
    tts = change.tts if "tts" in change.model_fields_set else current.tts
    if "voice" in change.model_fields_set:
        return VoiceChoice(tts=tts, voice=change.voice)
    return VoiceChoice(tts=tts, voice=current.voice if tts == current.tts else None)


def _blank_is_absent(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value
