"""Persian-first text front end of the TTS processor: normalise, read numbers as words, split into pieces."""

from processors.tts.text.language import Language, detect_language
from processors.tts.text.plan import SpeechText, plan_speech

__all__ = ["Language", "SpeechText", "detect_language", "plan_speech"]
