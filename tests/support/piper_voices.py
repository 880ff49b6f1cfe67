"""Tiny piper voices for tests: real piper ONNX signature and config, a tone instead of a neural voice.

Real voices (~63 MB) cannot be downloaded here. These graphs take what piper feeds a VITS voice (``input``
int64 [1, N] phoneme ids, ``input_lengths`` int64 [1], ``scales`` float32 [noise, length, noise_w]) and give
what it reads back (``output`` float32 [1, 1, samples]). Their duration tensor is a ``Ceil`` node, as in a real
voice, so piper's alignment patch finds it: every phoneme id lasts ``frames_per_id * length_scale`` frames
(rounded up) of ``hop_length`` samples, and the audio is a sine at ``frequency_hz`` that long, so a test can
tell which voice spoke and check that the rate shortens the phonemes. The config is piper's (``language``,
``dataset``, ``audio``, ``espeak.voice``, piper's default phoneme map), so piper phonemises real text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

HOP_LENGTH = 256
LOCALES = {"fa_IR": ("fa", "Persian", "فارسی", "Iran"), "en_US": ("en-us", "English", "English", "United States"),
           "de_DE": ("de", "German", "Deutsch", "Germany")}


def _graph(frequency_hz: float, sample_rate: int, frames_per_id: float) -> onnx.ModelProto:
    constant = helper.make_tensor
    nodes = [
        helper.make_node("Cast", ["input"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_float", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("Gather", ["scales", "length_index"], ["length_scale"], axis=0),
        helper.make_node("Mul", ["ones", "length_scale"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "frames_per_id"], ["widths"]),
        helper.make_node("Unsqueeze", ["widths", "axis_one"], ["widths_3d"]),
        helper.make_node("Ceil", ["widths_3d"], ["w_ceil"]),  # piper's duration tensor: [1, 1, N] frames
        helper.make_node("ReduceSum", ["w_ceil"], ["frames"], keepdims=0),
        helper.make_node("Mul", ["frames", "hop"], ["sample_count"]),
        helper.make_node("Range", ["zero", "sample_count", "one"], ["t"]),
        helper.make_node("Mul", ["t", "phase_step"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "half"], ["quiet"]),
        helper.make_node("Unsqueeze", ["quiet", "axes_front"], ["output"]),
    ]
    initialisers = [
        constant("zero", TensorProto.FLOAT, [], [0.0]), constant("one", TensorProto.FLOAT, [], [1.0]),
        constant("half", TensorProto.FLOAT, [], [0.5]),
        constant("length_index", TensorProto.INT64, [], [1]),
        constant("frames_per_id", TensorProto.FLOAT, [], [frames_per_id]),
        constant("axis_one", TensorProto.INT64, [1], [1]), constant("axes_front", TensorProto.INT64, [2], [0, 1]),
        constant("hop", TensorProto.FLOAT, [], [float(HOP_LENGTH)]),
        constant("phase_step", TensorProto.FLOAT, [], [2 * math.pi * frequency_hz / sample_rate]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_piper_voice",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
         helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "samples"])],
        initialisers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def voice_config(locale: str, dataset: str, *, sample_rate: int = 22050, quality: str = "medium") -> dict[str, object]:
    """A piper voice config as the voice repositories ship it (the fields piper and the catalog read)."""
    espeak_voice, name_english, name_native, country = LOCALES[locale]
    family, region = locale.split("_")
    return {
        "audio": {"sample_rate": sample_rate, "quality": quality},
        "espeak": {"voice": espeak_voice},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak", "phoneme_map": {}, "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": 256, "num_speakers": 1, "speaker_id_map": {}, "piper_version": "1.0.0",
        "language": {"code": locale, "family": family, "region": region, "name_native": name_native,
                     "name_english": name_english, "country_english": country},
        "dataset": dataset,
    }


def build_voice(folder: Path, locale: str, dataset: str, *, quality: str = "medium", frequency_hz: float = 220.0,
                sample_rate: int = 22050, frames_per_id: float = 3.0) -> Path:
    """``<folder>/<locale>-<dataset>-<quality>.onnx`` and its ``.onnx.json``; returns the .onnx path."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{locale}-{dataset}-{quality}.onnx"
    onnx.save(_graph(frequency_hz, sample_rate, frames_per_id), str(model))
    config = voice_config(locale, dataset, sample_rate=sample_rate, quality=quality)
    model.with_name(model.name + ".json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return model
