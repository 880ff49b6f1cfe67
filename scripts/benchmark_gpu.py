"""Measures, in one run, what a GPU buys the Wav2Lip engine: frames/s by batch size and sessions held in real time.

    python scripts/benchmark_gpu.py                            # random weights of the real architecture
    python scripts/benchmark_gpu.py --model .data/models/wav2lip.onnx --batches 1 8 32 128 --max-sessions 64
    python scripts/benchmark_gpu.py --variants fp32 int8       # on a CPU (here: the same code, the CPU provider)

Run it on the GPU machine with onnxruntime-gpu installed (``pip install onnxruntime-gpu``); it runs the same code on
a CPU, where it says so. Three tables:

1. frames/s by model variant and batch size: bare ONNX Runtime (the prepared inputs, through the engine's own
   ``infer``: I/O binding on CUDA) and the whole engine (mel windows, crops, inference, paste-back);
2. sessions held: N sessions each due a 12-frame chunk (0.48 s of video) every 0.48 s. One *shared step* renders
   the N chunks in one engine call, as the lip-sync processor's batching step does, and each session then encodes
   its chunk (H.264 + AAC). N is held when a step takes at most 80% of 0.48 s. Beside it, the same N chunks
   rendered one engine call per session (no batching);
3. the GPU's memory in use by this process (nvidia-smi), after the largest batch.

Random weights of the real architecture (36.3 M parameters) run at the real model's speed; the pictures are
noise. fp16 is made from the fp32 model as ``scripts/download_models.py --gpu-optimize`` makes it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from scripts import report_table

FPS = 25
RATE = 16_000
CHUNK_FRAMES = 12
CHUNK_S = CHUNK_FRAMES / FPS
STEP_BUDGET = 0.8  # a step may use this share of a chunk's playing time: the rest is the margin for jitter
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
ROUNDS = 5


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def provider_line() -> str:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = gpu_name()
    where = f"CUDA on {gpu}" if "CUDAExecutionProvider" in providers and gpu else "CPU (no CUDA provider or GPU)"
    return f"onnxruntime {ort.__version__}, providers {providers}: running on {where}"


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def gpu_memory_mb() -> str:
    """This process's GPU memory in MB, or why it cannot be read."""
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi"
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return used.strip()
    return "not listed"


def model_variants(model: Path | None, variants: Sequence[str], folder: Path) -> dict[str, Path]:
    """Each variant's ONNX file: the user's model (fp32) or random weights of the real architecture, and the
    fp16 / int8 variants made from it."""
    from scripts.download_models import make_fp16
    from scripts.wav2lip.convert import default_calibration_feeds, write_model
    from scripts.wav2lip.graph import random_state_dict, wav2lip_architecture

    fp32 = model
    if fp32 is None:
        say("building the Wav2Lip generator with random weights (36.3 M parameters)")
        fp32 = folder / "wav2lip.onnx"
        write_model(random_state_dict(wav2lip_architecture(), seed=0), fp32, int8=False, rewrite_transposed=False,
                    calibration=None, progress=lambda m: say(f"  {m}"))
    paths: dict[str, Path] = {}
    for variant in variants:
        if variant == "fp32":
            paths[variant] = fp32
        elif variant == "fp16":
            say("making the fp16 variant")
            paths[variant] = folder / "wav2lip.fp16.onnx"
            make_fp16(fp32, paths[variant])
        elif variant == "int8":
            if model is not None:
                raise SystemExit("--variants int8 needs the checkpoint's weights: make it with "
                                 "scripts/download_models.py --gpu-optimize and pass it as --model")
            say("building and quantising the int8 variant")
            paths[variant] = folder / "wav2lip.int8.onnx"
            write_model(random_state_dict(wav2lip_architecture(), seed=0), paths[variant], int8=True,
                        rewrite_transposed=True, calibration=default_calibration_feeds(frames=32),
                        progress=lambda m: say(f"  {m}"))
    return paths


def speech_audio(seconds: float) -> npt.NDArray[np.float32]:
    from processors.tts.engines.espeak import EspeakEngine

    text = "Good morning everyone. Today we will talk about the weather, the news, and a few good books."
    spoken = EspeakEngine().synthesize(text, "en")
    count = round(len(spoken.pcm) * RATE / spoken.sample_rate)
    audio = np.interp(np.arange(count) * spoken.sample_rate / RATE, np.arange(len(spoken.pcm)),
                      spoken.pcm.astype(np.float32) / 32768).astype(np.float32)
    return np.resize(audio, int(seconds * RATE))


def jobs(avatar: Any, audio: npt.NDArray[np.float32], count: int, size: int) -> list[Any]:
    """``count`` jobs of ``size`` frames at different places of the speech (different sessions)."""
    from processors.lipsync.engines.base import SAMPLES_PER_FRAME, RenderJob

    total = len(audio) // SAMPLES_PER_FRAME - size
    starts = [(index * 37) % max(1, total) for index in range(count)]
    return [RenderJob(avatar, audio[s * SAMPLES_PER_FRAME : (s + size) * SAMPLES_PER_FRAME], s, size) for s in starts]


def frames_per_second(engine: Any, avatar: Any, audio: npt.NDArray[np.float32], batch: int) -> tuple[float, float]:
    """(bare, whole engine) frames/s at ``batch`` frames per call: medians of ROUNDS calls after a warm-up."""
    engine.batch_size = batch
    (job,) = jobs(avatar, audio, 1, batch)
    prepared = engine.prepare([job])
    engine.infer(prepared.mel, prepared.face)
    engine.render_many([job])
    bare, whole = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        engine.infer(prepared.mel, prepared.face)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.render_many([job])
        whole.append(time.perf_counter() - started)
    return batch / float(np.median(bare)), batch / float(np.median(whole))


def step_seconds(engine: Any, avatar: Any, audio: npt.NDArray[np.float32], sessions: int,
                 shared: bool) -> float:
    """One step of ``sessions`` sessions: their chunks rendered (in one call if ``shared``), then each encoded."""
    from processors.lipsync.engines.base import SAMPLES_PER_FRAME
    from processors.lipsync.media import FragmentedMp4Writer

    chunk_jobs = jobs(avatar, audio, sessions, CHUNK_FRAMES)
    writers = [FragmentedMp4Writer(avatar.width, avatar.height, fps=FPS, audio_rate=RATE) for _ in chunk_jobs]
    pcm = [np.round(job.audio[: CHUNK_FRAMES * SAMPLES_PER_FRAME] * 32767).astype(np.int16) for job in chunk_jobs]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        rendered = engine.render_many(chunk_jobs) if shared else [engine.render(job) for job in chunk_jobs]
        for writer, frames, audio_chunk in zip(writers, rendered, pcm, strict=True):
            writer.write(frames, audio_chunk)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def sessions_held(engine: Any, avatar: Any, audio: npt.NDArray[np.float32], max_sessions: int,
                  ) -> list[list[object]]:
    rows: list[list[object]] = []
    sessions = 1
    while sessions <= max_sessions:
        shared = step_seconds(engine, avatar, audio, sessions, shared=True)
        alone = step_seconds(engine, avatar, audio, sessions, shared=False)
        held = shared <= STEP_BUDGET * CHUNK_S
        rows.append([sessions, f"{1000 * shared:.0f}", f"{1000 * alone:.0f}", "yes" if held else "no"])
        say(f"  {sessions} sessions: shared step {1000 * shared:.0f} ms, one call each {1000 * alone:.0f} ms")
        if not held:
            break
        sessions *= 2
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="your converted fp32 model (default: random weights)")
    parser.add_argument("--variants", nargs="+", choices=("fp32", "fp16", "int8"),
                        help="default: fp32 and fp16 on CUDA, fp32 and int8 on a CPU")
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--max-sessions", type=int, default=64)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from processors.lipsync.engines.wav2lip import Wav2LipEngine
    from scripts.performance_benchmark import sample_avatar

    on_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and gpu_name() is not None
    variants = args.variants or (["fp32", "fp16"] if on_cuda else ["fp32", "int8"])
    say(provider_line())
    avatar = sample_avatar()
    audio = speech_audio(30.0)
    fps_rows: list[list[object]] = []
    held_tables: list[str] = []
    memory_rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="benchmark-gpu-") as folder:
        for variant, path in model_variants(args.model, variants, Path(folder)).items():
            engine = Wav2LipEngine(path, batch_size=1)
            engine.prepare_avatar(avatar)
            say(f"{variant}: provider {engine.provider}, I/O binding {'on' if engine.io_binding else 'off'}")
            for batch in args.batches:
                bare, whole = frames_per_second(engine, avatar, audio, batch)
                say(f"  batch {batch}: bare {bare:.1f} fps, whole engine {whole:.1f} fps")
                fps_rows.append([variant, engine.provider.removesuffix("ExecutionProvider"), batch,
                                 f"{bare:.1f}", f"{whole:.1f}", f"{whole / FPS:.1f}"])
            memory_rows.append([variant, max(args.batches), gpu_memory_mb()])
            engine.batch_size = max(args.batches)
            held = sessions_held(engine, avatar, audio, args.max_sessions)
            held_tables.append(report_table.table(
                f"Sessions held, {variant} ({engine.provider}): one step = each session's 12-frame chunk "
                f"rendered, then encoded; held when a step ≤ {1000 * STEP_BUDGET * CHUNK_S:.0f} ms",
                ["sessions", "shared step ms", "one call each ms", "held"], held))
    print(provider_line())
    print(report_table.table("Frames per second by variant and batch size (medians)",
                             ["variant", "provider", "batch", "bare fps", "whole engine fps", "real-time sessions"],
                             fps_rows))
    print("\n\n".join(held_tables))
    print(report_table.table("GPU memory of this process after the largest batch",
                             ["variant", "batch", "MB"], memory_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
