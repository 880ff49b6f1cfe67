"""Checks that this machine can run the service: broker, database, migrations, voices, models, faces, GPU.

    .venv/bin/python scripts/validate_system.py                         # broker, database, migrations, espeak-ng,
                                                                        # piper voices, GPU
    .venv/bin/python scripts/validate_system.py --check-models          # + load each model and run one inference
    .venv/bin/python scripts/validate_system.py --check-face-detection  # + detect and landmark the sample's face

Prints one row per check (ok, FAIL or skip) with a fix for each failure; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

import numpy as np
import psycopg

from infra.settings import Settings, load_settings
from processors.registration.analyse import RegistrationResult
from processors.tts.engines.base import Language
from processors.tts.engines.piper_catalog import Catalog, PiperVoiceInfo, Problem, names_no_voice_of, read_catalog

OK, FAIL, SKIP = "ok", "FAIL", "skip"


@dataclass(frozen=True)
class Result:
    check: str
    status: str
    detail: str
    fix: str = ""


Check = Callable[[Settings], Result]


def broker_address(settings: Settings) -> str:
    return settings.kafka_bootstrap_servers or f"127.0.0.1:{settings.embedded_kafka_port}"


def check_broker(settings: Settings) -> Result:
    from confluent_kafka.admin import AdminClient

    address = broker_address(settings)
    try:
        # log_level 0: librdkafka's own retry lines would bury the table
        admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 3000, "log_level": 0})
        metadata = admin.list_topics(timeout=5)
    except Exception as error:  # confluent-kafka raises KafkaException with librdkafka's reason
        return Result("broker", FAIL, f"{address}: {error}",
                      "start it (`make run` starts the embedded broker) or set KAFKA_BOOTSTRAP_SERVERS to your cluster")
    return Result("broker", OK, f"{address}: {len(metadata.brokers)} broker(s), {len(metadata.topics)} topics")


def check_database(settings: Settings) -> Result:
    try:
        with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        return Result("database", FAIL, str(error).strip().splitlines()[0],
                      "start PostgreSQL or set DATABASE_URL (`make run` creates the database, or starts an "
                      "embedded server when none answers)")
    return Result("database", OK, f"PostgreSQL {version[0] if version else '?'}")


def check_migrations(settings: Settings) -> Result:
    from infra.migrations import pending_files

    try:
        with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            applied = ({row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
                       if exists and exists[0] else set())
    except psycopg.Error as error:
        return Result("migrations", SKIP, f"database unreachable: {str(error).strip().splitlines()[0]}")
    pending = [path.name for path in pending_files(applied)]
    if pending:
        return Result("migrations", FAIL, f"{len(pending)} not applied: {', '.join(pending)}",
                      "start the services once (`make run` applies them), or run "
                      "`.venv/bin/python -c 'from infra.migrations import migrate; migrate(\"$DATABASE_URL\")'`")
    return Result("migrations", OK, f"{len(applied)} applied, none pending")


def check_espeak(settings: Settings) -> Result:
    from processors.tts.engines.espeak_library import shared_library

    try:
        library = shared_library()
        spoken = {voice: len(library.synthesize(text, voice).pcm) for voice, text in
                  ((settings.espeak_voice_fa, "سلام"), (settings.espeak_voice_en, "hello"))}
    except (OSError, RuntimeError, ValueError) as error:
        return Result("espeak-ng voices", FAIL, str(error),
                      "install espeak-ng (`apt-get install espeak-ng`); ESPEAK_VOICE_FA / ESPEAK_VOICE_EN name "
                      "voices of `espeak-ng --voices`")
    silent = [voice for voice, samples in spoken.items() if samples == 0]
    if silent:
        return Result("espeak-ng voices", FAIL, f"no speech from {', '.join(silent)}",
                      "choose voices `espeak-ng --voices` lists (ESPEAK_VOICE_FA, ESPEAK_VOICE_EN)")
    return Result("espeak-ng voices", OK, ", ".join(f"{voice}: {n} samples" for voice, n in spoken.items()))


PIPER_PHRASES = {"fa": "سلام، امروز هوا خوب است.", "en": "Hello, the weather is fine today."}
_PIPER_INSTALL = "install a voice with `scripts/download_models.py --piper-voice NAME --from FILE_OR_URL`"


def check_piper_voices(settings: Settings) -> Result:
    """The catalog the TTS processor loads: PIPER_MODEL, PIPER_VOICES_DIR's voices, the joe voice's package."""
    return piper_voices_result(settings, packaged=True)


def piper_voices_result(settings: Settings, *, packaged: bool) -> Result:
    """Every voice of the catalog loaded (its own ONNX Runtime session, as the processor does) and made to say a
    short phrase in its language; a FAIL row when a voice does not, or piper is asked for and has no voice."""
    from processors.tts.engines.piper import catalog_files

    name, folder = "piper voices", settings.piper_voice_folder
    asked = piper_asked_by(settings)
    files = catalog_files(folder, settings.piper_model, packaged=packaged)
    if not files:
        if asked:
            return Result(name, FAIL, f"no piper voice in {folder}, yet piper is asked for by {', '.join(asked)}",
                          f"{_PIPER_INSTALL} (into PIPER_VOICES_DIR), or set TTS_ENGINE=espeak")
        return Result(name, SKIP, f"no piper voice catalog ({folder} holds no voice) and no setting asks for piper")
    if importlib.util.find_spec("piper") is None:
        detail = f"{len(files)} voice file(s) but the piper-tts package is not installed"
        if asked:
            return Result(name, FAIL, f"{detail}, yet piper is asked for by {', '.join(asked)}",
                          "pip install -e '.[piper]'")
        return Result(name, SKIP, f"{detail}: nothing asks for piper")
    catalog = read_catalog(files)
    problems = [(passed.reason if passed.reason.startswith(passed.path.name)
                 else f"{passed.path.name}: {passed.reason}", PASSED_OVER_FIXES[passed.problem])
                for passed in catalog.skipped]
    said = []
    for voice in catalog.voices:
        outcome = _speak_once(settings, voice)
        if isinstance(outcome, str):
            said.append(outcome)
        else:
            problems.append(outcome)
    problems += _unknown_piper_defaults(settings, catalog)
    if problems:
        fixes = list(dict.fromkeys(fix for _, fix in problems))
        return Result(name, FAIL, "; ".join(detail for detail, _ in problems), "; ".join(fixes))
    unused = "" if asked else " (unused: TTS_ENGINE=piper or TTS_EXTRA_ENGINES=piper speaks with them)"
    return Result(name, OK, ", ".join(said) + unused)


# What to do about a file the catalog passed over, by its problem code (piper_catalog.Problem).
PASSED_OVER_FIXES: dict[Problem, str] = {
    "other_language": "remove voices of other languages from PIPER_VOICES_DIR (this service speaks fa and en)",
    "duplicate_name": "keep one file per voice name (PIPER_MODEL and PIPER_VOICES_DIR name the same voice)",
    "no_voice_file": f"{_PIPER_INSTALL}: it writes the .onnx and its .onnx.json",
    "no_config": f"{_PIPER_INSTALL}: it writes the .onnx and its .onnx.json",
    "bad_config": "put the voice's own .onnx.json (from the same voice repository) beside its .onnx",
}


def piper_asked_by(settings: Settings) -> list[str]:
    """The settings that say piper is meant to speak here."""
    asked = ["TTS_ENGINE / TTS_EXTRA_ENGINES"] if "piper" in settings.selected_tts_engines else []
    for setting, value in (("PIPER_MODEL", settings.piper_model), ("PIPER_VOICES_DIR", settings.piper_voices_dir),
                           ("PIPER_VOICE_FA", settings.piper_voice_fa), ("PIPER_VOICE_EN", settings.piper_voice_en)):
        if value:
            asked.append(setting)
    return asked


def _speak_once(settings: Settings, voice: PiperVoiceInfo) -> str | tuple[str, str]:
    """"name (fa): 1.2 s of speech", or (what went wrong, its fix)."""
    from processors.tts.engines.base import EngineConfigError, TtsFailure
    from processors.tts.engines.piper import PiperEngine

    try:
        engine = PiperEngine(Catalog((voice,)), threads=settings.piper_threads,
                             cache_dir=settings.data_dir / "models" / "piper")
        speech = engine.synthesize(PIPER_PHRASES[voice.language], voice.language, voice.name)
    except EngineConfigError as error:
        return str(error), "replace the voice with a piper (VITS) export and its own .onnx.json"
    except TtsFailure as error:
        return f"{voice.name}: {error}", "replace the voice; check that its .onnx.json belongs to its .onnx"
    if len(speech.pcm) == 0:
        return f"{voice.name}: no audio for a short phrase", "replace the voice; its graph gives no speech"
    return f"{voice.name} ({voice.language}): {len(speech.pcm) / speech.sample_rate:.1f} s"


def _unknown_piper_defaults(settings: Settings, catalog: Catalog) -> list[tuple[str, str]]:
    """PIPER_VOICE_FA / PIPER_VOICE_EN naming no voice of their language: the processor would stop at start-up."""
    problems = []
    configured: tuple[tuple[Language, str], ...] = (("fa", settings.piper_voice_fa), ("en", settings.piper_voice_en))
    for language, wanted in configured:
        if names_no_voice_of(catalog, language, wanted):
            known = ", ".join(v.name for v in catalog.of_language(language))
            choice = f"one of its {language} voices ({known})" if known else f"a {language} voice you install"
            problems.append((f"PIPER_VOICE_{language.upper()}: no {language} voice '{wanted}' in the catalog",
                             f"set PIPER_VOICE_{language.upper()} to {choice}, or leave it empty"))
    return problems


def check_gpu(settings: Settings) -> Result:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    wanted = settings.gpu_memory_limit > 0  # GPU_MEMORY_LIMIT set: the user expects the CUDA provider
    smi = shutil.which("nvidia-smi")
    gpus = ""
    if smi is not None:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        gpus = listed.stdout.strip() if listed.returncode == 0 else ""
    if "CUDAExecutionProvider" in providers and gpus:
        return Result("GPU", OK, f"{gpus.splitlines()[0]} (+{len(gpus.splitlines()) - 1}); CUDA provider available")
    why = ("onnxruntime has no CUDA provider" if "CUDAExecutionProvider" not in providers else
           "the CUDA provider is installed but no GPU is visible")
    fix = ("install onnxruntime-gpu in place of onnxruntime, the NVIDIA driver, and in Docker run with --gpus all "
           "(CUDA_VISIBLE_DEVICES selects GPUs)")
    if wanted:
        return Result("GPU", FAIL, f"GPU_MEMORY_LIMIT is set but {why}", fix)
    return Result("GPU", SKIP, f"{why}: lip-sync runs on CPU (no GPU is configured)")


def sample_face_data(settings: Settings) -> tuple[RegistrationResult, float]:
    from processors.registration.analyse import analyse_upload
    from processors.registration.sample import sample_png

    started = time.perf_counter()
    result = analyse_upload(sample_png(), avatar_id=settings.sample_avatar_id)
    return result, (time.perf_counter() - started) * 1000


def check_face_detection(settings: Settings) -> Result:
    from processors.registration.errors import RegistrationError

    try:
        result, elapsed_ms = sample_face_data(settings)
    except (RegistrationError, RuntimeError, OSError) as error:
        return Result("face detection", FAIL, f"the sample photo: {error}",
                      "reinstall dlib-bin and face-recognition-models (`make run` installs them); with "
                      "FACE_BACKEND=insightface check INSIGHTFACE_MODEL_DIR")
    frame = result.face_data.frames[0]
    verdict = "passed" if result.report.passed else "refused"
    return Result("face detection", OK, f"sample: one face ({result.detector}), {len(frame.landmarks)} landmarks, "
                  f"quality checks {verdict}, {elapsed_ms:.0f} ms")


def check_lipsync_model(settings: Settings) -> Result:
    from processors.lipsync.engines.base import RenderJob
    from processors.lipsync.main import build_engine

    name = f"lip-sync model ({settings.lipsync_engine})"
    try:
        started = time.perf_counter()
        engine = build_engine(settings)
        load_ms = (time.perf_counter() - started) * 1000
        result, _ = sample_face_data(settings)
        job = RenderJob(avatar=result.face_data, audio=np.zeros(640 * 4, np.float32), first_frame=0, n_frames=2)
        started = time.perf_counter()
        frames = engine.render(job)
        render_ms = (time.perf_counter() - started) * 1000
    except SystemExit as error:  # build_engine stops with one line naming the setting
        return Result(name, FAIL, str(error), "install the model: `.venv/bin/python scripts/download_models.py "
                      "--from wav2lip_gan.pth`, or set LIPSYNC_ENGINE=embedded")
    except Exception as error:  # any engine failure is what this check exists to show
        return Result(name, FAIL, f"{type(error).__name__}: {error}",
                      "check WAV2LIP_MODEL_PATH with `scripts/download_models.py --verify-only`")
    if len(frames) != 2:
        return Result(name, FAIL, f"asked for 2 frames, got {len(frames)}", "report this as a bug")
    return Result(name, OK, f"loaded in {load_ms:.0f} ms, 2 frames in {render_ms:.0f} ms")


def check_viseme_estimator(_settings: Settings) -> Result:
    from processors.lipsync.viseme_estimator import VisemeEstimator, VisemeEstimatorError

    try:
        estimator = VisemeEstimator.load()
        marks = estimator.estimate(np.sin(np.linspace(0, 2000, 16_000)).astype(np.float32) * 0.1)
    except (VisemeEstimatorError, OSError, ValueError) as error:
        return Result("viseme estimator", FAIL, str(error),
                      "restore assets/models/viseme_estimator.npz from the repository (git checkout assets/)")
    return Result("viseme estimator", OK, f"{len(estimator.classes)} classes, {len(marks)} onsets in 1 s of audio")


BASE_CHECKS: list[Check] = [check_broker, check_database, check_migrations, check_espeak, check_piper_voices,
                            check_gpu]
MODEL_CHECKS: list[Check] = [check_lipsync_model, check_viseme_estimator]
FACE_CHECKS: list[Check] = [check_face_detection]


def run_checks(settings: Settings, checks: list[Check]) -> list[Result]:
    return [check(settings) for check in checks]


def format_table(results: list[Result]) -> str:
    widths = [max(len(r.check) for r in results), 4]
    lines = []
    for r in results:
        lines.append(f"{r.check:<{widths[0]}}  {r.status:<{widths[1]}}  {r.detail}")
        if r.status == FAIL:
            lines.append(f"{'':<{widths[0]}}  {'':<{widths[1]}}  fix: {r.fix}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-models", action="store_true", help="load each model and run one inference")
    parser.add_argument("--check-face-detection", action="store_true", help="detect the sample avatar's face")
    args = parser.parse_args(argv)
    settings = load_settings()
    checks = BASE_CHECKS + (MODEL_CHECKS if args.check_models else []) + (
        FACE_CHECKS if args.check_face_detection else [])
    results = run_checks(settings, checks)
    print(format_table(results))
    failed = [r.check for r in results if r.status == FAIL]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed" + (
        f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
