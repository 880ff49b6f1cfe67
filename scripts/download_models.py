"""Installs the Wav2Lip model or a piper voice from a URL or local file the user gives, checks it, verifies installs.

Nothing is downloaded from anywhere on its own: the weights are not ours to ship (see assets/models/manifest.json
and THIRD_PARTY_LICENSES.md), so you give their location, and the script says plainly what it could not reach.

    .venv/bin/python scripts/download_models.py --from ~/Downloads/wav2lip_gan.pth --verify-checksums
    .venv/bin/python scripts/download_models.py --from https://example.org/wav2lip_gan.pth --gpu-optimize
    .venv/bin/python scripts/download_models.py --piper-voice fa_IR-amir-medium --from ~/Downloads/amir.onnx
    .venv/bin/python scripts/download_models.py --verify-only

A piper voice is its .onnx and the .onnx.json beside it (``--from`` names the .onnx; the .json is read from the
same place with ``.json`` appended, or from ``--config-from``); it goes into PIPER_VOICES_DIR, the catalog the
piper backend speaks from (docs/speech.md).

Exit status: 0 done, 1 a check failed, 2 a source could not be reached or a file is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

import numpy as np
import onnx

from infra.settings import PROJECT_ROOT, Settings, load_settings
from processors.lipsync.engines.wav2lip import FACE_SHAPE, MEL_SHAPE, Wav2LipModelError, check_signature, open_session
from processors.registration.faces import default_predictor_path
from processors.tts.engines.piper import packaged_model
from scripts.piper_voices import Expected, VoiceCheckFailed, install_voice, verify_catalog
from scripts.wav2lip.convert import ConversionError, convert, default_calibration_feeds
from scripts.wav2lip.graph import Architecture, CheckpointMismatch
from scripts.wav2lip.torch_checkpoint import CheckpointError

MANIFEST = PROJECT_ROOT / "assets" / "models" / "manifest.json"
INSTALLED_RECORD = "installed.json"  # next to the models: what this script wrote, with sha256, for --verify-only
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2
CHUNK = 1 << 20


class Unreachable(RuntimeError):
    """A source the user gave could not be read: the message says which and why."""


class CheckFailed(RuntimeError):
    """A file was read but is not what it should be (checksum, format)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    file: str
    url: str | None
    sha256: str | None
    licence: str
    source: str
    config_sha256: str | None = None  # piper voices: the .onnx.json's


@dataclass(frozen=True)
class Variant:
    """One installed model file and what it is for."""

    suffix: str  # "" for the fp32 model itself
    purpose: str


VARIANTS = [Variant("", "fp32: CPU or GPU"), Variant(".fp16", "fp16: GPU (tensor cores), half the memory"),
            Variant(".int8", "int8: CPU, ~2.5x faster than fp32")]


def load_manifest(path: Path = MANIFEST) -> dict[str, ModelEntry]:
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = [ModelEntry(**{k: item[k] for k in ModelEntry.__dataclass_fields__ if k in item})
               for item in data["models"]]
    return {entry.name: entry for entry in entries}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: str, destination: Path, timeout_s: float = 60.0) -> Path:
    """Copy a local file, or download an http(s)/file URL, to ``destination``; Unreachable says why not."""
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise Unreachable(f"no file at {path}")
        shutil.copyfile(path, destination)
        return destination
    try:
        with urllib.request.urlopen(source, timeout=timeout_s) as response, destination.open("wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"could not reach {source}: {reason}") from None
    return destination


def check_checksum(path: Path, entry: ModelEntry, given: str | None) -> str:
    """The file's sha256, if it matches the one given or in the manifest; with neither, CheckFailed shows it."""
    actual = sha256_of(path)
    expected = (given or entry.sha256 or "").lower()
    if not expected:
        raise CheckFailed(f"{entry.name}: the manifest has no published sha256 to check against. This file's is "
                          f"{actual}: compare it with the source's, then pass --sha256 {actual} (or record it in "
                          f"{MANIFEST.relative_to(PROJECT_ROOT)})")
    if actual != expected:
        raise CheckFailed(f"{entry.name}: sha256 {actual} does not match the expected {expected}: the file is "
                          "corrupt or not the one the manifest names")
    return actual


def variant_path(model: Path, variant: Variant) -> Path:
    return model.with_name(model.stem + variant.suffix + model.suffix)


def make_fp16(fp32: Path, output: Path) -> None:
    """Weights and arithmetic in fp16; inputs and outputs stay float32, so the engine feeds it unchanged."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(output))


def record_install(models_dir: Path, files: list[Path]) -> None:
    record_path = models_dir / INSTALLED_RECORD
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for path in files:
        record[path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size, "installed_at": int(time.time())}
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def install(entry: ModelEntry, source: str, output: Path, *, verify: bool, sha256: str | None, gpu_optimize: bool,
            arch: Architecture | None = None, say: Any = print) -> list[Path]:
    """Fetch ``source`` (checked), convert it to ``output`` and, with ``gpu_optimize``, its fp16 and int8 variants."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as folder:
        checkpoint = fetch(source, Path(folder) / entry.file)
        say(f"fetched {entry.file} ({checkpoint.stat().st_size / 1e6:.1f} MB) from {source}")
        if verify:
            say(f"sha256 ok: {check_checksum(checkpoint, entry, sha256)}")
        report = convert(checkpoint, output, arch=arch, progress=lambda line: say(f"  {line}"))
        written = [report.output]
        if gpu_optimize:
            fp16 = variant_path(output, VARIANTS[1])
            make_fp16(output, fp16)
            say(f"wrote {fp16} (fp16, for the CUDA provider)")
            int8 = variant_path(output, VARIANTS[2])
            calibration = default_calibration_feeds(frames=16, progress=lambda line: say(f"  {line}"))
            convert(checkpoint, int8, int8=True, calibration=calibration, arch=arch,
                    progress=lambda line: say(f"  {line}"))
            written += [fp16, int8]
    record_install(output.parent, written)
    return written


@dataclass(frozen=True)
class Verified:
    file: str
    ok: bool
    detail: str


def verify_model(path: Path, recorded: dict[str, Any]) -> Verified:
    """Load the model, check its signature, run one inference; compare its sha256 with the install record."""
    try:
        session = open_session(path, threads=1, use_gpu=False)
        signature = check_signature(session, path)
        feeds = {signature.mel_input: np.zeros((1, *MEL_SHAPE), np.float32),
                 signature.face_input: np.zeros((1, *FACE_SHAPE), np.float32)}
        started = time.perf_counter()
        session.run([signature.output], feeds)
        elapsed_ms = (time.perf_counter() - started) * 1000
    except Wav2LipModelError as error:
        return Verified(path.name, False, str(error))
    expected = recorded.get(path.name, {}).get("sha256")
    if expected is not None and sha256_of(path) != expected:
        return Verified(path.name, False, f"loads, but its sha256 differs from the one recorded at install in "
                        f"{INSTALLED_RECORD}: the file changed; re-install it")
    checked = "sha256 as installed" if expected else "no install record (not installed by this script)"
    return Verified(path.name, True, f"loads, one frame in {elapsed_ms:.0f} ms on CPU; {checked}")


def verify_installed(settings: Settings) -> list[Verified]:
    model = settings.wav2lip_model_path
    record_path = model.parent / INSTALLED_RECORD
    recorded: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    results = []
    for variant in VARIANTS:
        path = variant_path(model, variant)
        if path.is_file():
            results.append(verify_model(path, recorded))
        elif not variant.suffix:
            needed = settings.lipsync_engine == "wav2lip"
            results.append(Verified(path.name, not needed, "missing" + (
                ": LIPSYNC_ENGINE=wav2lip needs it; install it with --from" if needed else
                " (not needed: LIPSYNC_ENGINE=embedded loads no model file)")))
    results.append(verify_landmarks())
    piper_needed = ("piper" in settings.selected_tts_engines and settings.piper_model is None
                    and packaged_model() is None)
    results += [Verified(row.file, row.ok, row.detail)
                for row in verify_catalog(settings.piper_voice_folder, sha256_of, needed=piper_needed)]
    return results


def verify_landmarks() -> Verified:
    """dlib's 68-point model, which face-recognition-models installs with pip (registration's landmarks)."""
    try:
        import dlib

        path = default_predictor_path()
        dlib.shape_predictor(str(path))
    except (RuntimeError, OSError) as error:
        return Verified("shape_predictor_68_face_landmarks.dat", False, f"{error}: reinstall face-recognition-models")
    return Verified(path.name, True, f"loads ({path.stat().st_size / 1e6:.0f} MB, face-recognition-models)")


def print_table(rows: list[Verified]) -> None:
    width = max(len(row.file) for row in rows)
    for row in rows:
        print(f"{row.file:<{width}}  {'ok  ' if row.ok else 'FAIL'}  {row.detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="wav2lip_gan", help="a name in assets/models/manifest.json "
                        "(default: %(default)s)")
    parser.add_argument("--from", dest="source", help="where the checkpoint is: a local path or an http(s)/file URL")
    parser.add_argument("--verify-checksums", action="store_true", help="check the file's sha256 before installing")
    parser.add_argument("--sha256", help="the expected sha256, when the manifest has none")
    parser.add_argument("--gpu-optimize", action="store_true",
                        help="also write the fp16 (GPU) and int8 (CPU) variants next to the model")
    parser.add_argument("--verify-only", action="store_true", help="download nothing: check what is installed")
    parser.add_argument("-o", "--output", type=Path, help="the ONNX model to write (default: WAV2LIP_MODEL_PATH); "
                        "with --piper-voice, the folder to install into (default: PIPER_VOICES_DIR)")
    parser.add_argument("--piper-voice", metavar="NAME", help="install a piper voice under this name (e.g. "
                        "fa_IR-amir-medium) from --from, its .onnx.json from beside it or --config-from")
    parser.add_argument("--config-from", help="where the piper voice's .onnx.json is, if not --from + '.json'")
    parser.add_argument("--config-sha256", help="the expected sha256 of the piper voice's .onnx.json")
    return parser.parse_args(argv)


def main_piper_voice(args: argparse.Namespace, settings: Settings) -> int:
    """--piper-voice NAME: fetch, check and install one voice into the catalog folder."""
    entry = load_manifest().get(args.piper_voice)
    source = args.source or (entry.url if entry is not None else None)
    if source is None:
        where = f" Get it from {entry.source} ({entry.licence})," if entry is not None else ""
        print(f"could not reach piper voice {args.piper_voice}: no --from given and the manifest has no URL for "
              f"it.{where} then run this again with --from PATH_OR_URL of its .onnx", file=sys.stderr)
        return EXIT_UNREACHABLE
    folder = args.output or settings.piper_voice_folder
    expected = Expected(model=args.sha256 or (entry.sha256 if entry else None),
                        config=args.config_sha256 or (entry.config_sha256 if entry else None),
                        verify=args.verify_checksums)
    try:
        info = install_voice(args.piper_voice, source, folder, fetch=fetch, sha256_of=sha256_of, expected=expected,
                             config_from=args.config_from)
    except Unreachable as error:
        print(f"could not reach the voice: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except VoiceCheckFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"installed {info.model} and {info.config_path.name}")
    print(f"speak with it: TTS_ENGINE=piper (or TTS_EXTRA_ENGINES=piper) and \"tts\": \"piper\", \"voice\": "
          f"\"{info.name}\" on a request or an avatar; the {info.language} default is "
          f"PIPER_VOICE_{info.language.upper()}, else the catalog's first {info.language} voice")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    if args.verify_only:
        rows = verify_installed(settings)
        print_table(rows)
        return EXIT_OK if all(row.ok for row in rows) else EXIT_FAILED
    if args.piper_voice:
        return main_piper_voice(args, settings)
    entries = load_manifest()
    entry = entries.get(args.model)
    if entry is None:
        print(f"error: no model {args.model!r} in the manifest; known: {', '.join(entries)}", file=sys.stderr)
        return EXIT_FAILED
    source = args.source or entry.url
    if source is None:
        print(f"could not reach {entry.name}: the manifest has no URL for it and none was given. Get {entry.file} "
              f"from {entry.source} ({entry.licence}), then run this again with --from PATH_OR_URL", file=sys.stderr)
        return EXIT_UNREACHABLE
    output = args.output or settings.wav2lip_model_path
    try:
        written = install(entry, source, output, verify=args.verify_checksums, sha256=args.sha256,
                          gpu_optimize=args.gpu_optimize)
    except Unreachable as error:
        print(f"could not reach the model: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (CheckFailed, CheckpointError, CheckpointMismatch, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("installed:\n" + "\n".join(f"  {path}" for path in written))
    print(f"use it with LIPSYNC_ENGINE=wav2lip WAV2LIP_MODEL_PATH={written[0]}"
          + (f" (or {written[1].name} on a GPU, {written[2].name} on CPU)" if len(written) == 3 else ""))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
