"""Installs a named piper voice (.onnx and .onnx.json) into the catalog folder, checked, and verifies the catalog.

Used by scripts/download_models.py (``--piper-voice NAME --from PATH_OR_URL``). The voice is fetched into a
temporary folder beside the catalog, its checksums checked when asked, its config read (language, dataset,
rate) and its graph run once with piper's own input signature; only then are both files moved in, so a bad
download never reaches the catalog the TTS processor reads. The sha256 of both files goes to the folder's
``installed.json``; ``--verify-only`` compares them and runs every voice once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from processors.tts.engines.piper_catalog import (
    PiperVoiceInfo,
    VoiceConfigError,
    config_path_of,
    read_voice,
    voice_files,
)

INSTALLED_RECORD = "installed.json"
VOICE_NAME = re.compile(r"^[A-Za-z0-9_+.-]{1,64}$")  # what a request's `voice` may name
PIPER_INPUTS = frozenset({"input", "input_lengths", "scales"})  # piper's VITS inputs (sid: multi-speaker only)

Fetch = Callable[[str, Path], Path]  # (source, destination) → the fetched file; raises on an unreachable source
Say = Callable[[str], None]


class VoiceCheckFailed(RuntimeError):
    """The voice was fetched but is not a usable piper voice of this service (config, graph, checksum)."""


@dataclass(frozen=True)
class VoiceRow:
    """One line of the --verify-only table."""

    file: str
    ok: bool
    detail: str


def config_source(source: str) -> str:
    """Where the .onnx.json is when only the .onnx was given: beside it, as piper's voice repositories keep it."""
    return source + ".json"


def check_name(name: str) -> None:
    if not VOICE_NAME.match(name) or name.endswith(".onnx"):
        raise VoiceCheckFailed(f"voice name {name!r}: use 1-64 letters, digits and _ + . - without .onnx "
                               "(piper's own names, e.g. fa_IR-amir-medium)")


def run_once(model: Path, info: PiperVoiceInfo) -> float:
    """Run the graph once on a few phoneme ids as piper feeds it; the milliseconds it took."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types for unreadable graphs
        raise VoiceCheckFailed(f"{model.name} is not an ONNX model ONNX Runtime loads: {error}") from None
    names = {item.name for item in session.get_inputs()}
    if not names >= PIPER_INPUTS:
        raise VoiceCheckFailed(f"{model.name} is not a piper voice: its inputs are {sorted(names)}, piper feeds "
                               f"{sorted(PIPER_INPUTS)}")
    id_map = info.config["phoneme_id_map"]
    ids = [int(id_map[symbol][0]) for symbol in ("^", "_", "a", "_", "$") if symbol in id_map]
    feeds: dict[str, Any] = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                             "scales": np.array([0.667, 1.0, 0.8], np.float32)}
    if "sid" in names:
        feeds["sid"] = np.array([0], np.int64)
    started = time.perf_counter()
    try:
        audio = session.run(None, feeds)[0]
    except Exception as error:
        raise VoiceCheckFailed(f"{model.name} does not run on piper's inputs: {error}") from None
    if np.asarray(audio).size == 0:
        raise VoiceCheckFailed(f"{model.name} gave no audio")
    return (time.perf_counter() - started) * 1000


def check_voice(model: Path) -> tuple[PiperVoiceInfo, float]:
    """The voice's description and one run's milliseconds; VoiceCheckFailed says what is wrong."""
    try:
        info = read_voice(model)
    except VoiceConfigError as error:
        raise VoiceCheckFailed(str(error)) from None
    return info, run_once(model, info)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / INSTALLED_RECORD
    loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return loaded if isinstance(loaded, dict) else {}


def _record(folder: Path, files: list[Path], sha256_of: Callable[[Path], str]) -> None:
    record = _read_record(folder)
    for path in files:
        record[path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size, "installed_at": int(time.time())}
    (folder / INSTALLED_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Expected:
    """The sha256 each file must have (None: not checked), and whether checking was asked for."""

    model: str | None
    config: str | None
    verify: bool


def install_voice(name: str, source: str, folder: Path, *, fetch: Fetch, sha256_of: Callable[[Path], str],
                  expected: Expected, config_from: str | None = None, say: Say = print) -> PiperVoiceInfo:
    """Fetch ``<name>.onnx`` and its ``.onnx.json``, check them, and move them into ``folder``."""
    check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".installing-") as staging:
        model = fetch(source, Path(staging) / f"{name}.onnx")
        config = fetch(config_from or config_source(source), config_path_of(model))
        say(f"fetched {model.name} ({model.stat().st_size / 1e6:.1f} MB) and {config.name} from {source}")
        if expected.verify:
            for path, wanted in ((model, expected.model), (config, expected.config)):
                say(f"sha256 ok: {path.name} {_checked(path, wanted, sha256_of)}")
        info, elapsed_ms = check_voice(model)
        say(f"{name}: speaks {info.language} ({info.locale}), dataset {info.dataset or '-'}, "
            f"{info.quality or '-'} quality, {info.sample_rate} Hz; one run in {elapsed_ms:.0f} ms")
        installed = [folder / model.name, folder / config.name]
        os.replace(config, installed[1])  # the .json first: the catalog only lists an .onnx with its .json
        os.replace(model, installed[0])
    _record(folder, installed, sha256_of)
    return read_voice(installed[0])


def _checked(path: Path, wanted: str | None, sha256_of: Callable[[Path], str]) -> str:
    actual = sha256_of(path)
    if not wanted:
        raise VoiceCheckFailed(f"{path.name}: no sha256 to check against. Its sha256 is {actual}: compare it "
                               "with the source's, then pass it (--sha256 for the .onnx, --config-sha256 for the "
                               ".onnx.json) or record it in assets/models/manifest.json")
    if actual != wanted.lower():
        raise VoiceCheckFailed(f"{path.name}: sha256 {actual} does not match the expected {wanted}: the file is "
                               "corrupt or not the one named")
    return actual


def verify_catalog(folder: Path, sha256_of: Callable[[Path], str], *, needed: bool) -> list[VoiceRow]:
    """One row per voice in the folder (config read, graph run once, sha256 against the install record)."""
    recorded = _read_record(folder)
    rows: list[VoiceRow] = []
    for model in voice_files(folder):
        try:
            info, elapsed_ms = check_voice(model)
        except VoiceCheckFailed as error:
            rows.append(VoiceRow(model.name, False, str(error)))
            continue
        changed = [path.name for path in (model, info.config_path)
                   if path.name in recorded and sha256_of(path) != recorded[path.name].get("sha256")]
        if changed:
            rows.append(VoiceRow(model.name, False, f"{', '.join(changed)} changed since it was installed "
                                                    f"({INSTALLED_RECORD}): re-install the voice"))
            continue
        checked = "sha256 as installed" if model.name in recorded else "no install record (copied in by hand)"
        rows.append(VoiceRow(model.name, True, f"piper voice '{info.name}': {info.language} ({info.locale}), "
                                               f"{info.dataset or '-'}, {info.quality or '-'}, {info.sample_rate} "
                                               f"Hz; one run in {elapsed_ms:.0f} ms; {checked}"))
    if not rows:
        rows.append(VoiceRow("piper voices", not needed, f"none in {folder}" + (
            ": TTS_ENGINE / TTS_EXTRA_ENGINES use piper; install one with --piper-voice NAME --from PATH_OR_URL"
            if needed else " (piper is not selected; the joe voice's package serves it when it is)")))
    return rows
