"""Measures the lip-sync engines: frames/s by batch size, real-time factor per stage, peak memory, quality.

    python scripts/performance_benchmark.py                      # everything, ~3-5 minutes on 2 cores
    python scripts/performance_benchmark.py --quick              # shorter clips, fewer batch sizes, no int8
    python scripts/performance_benchmark.py --output report.json --verbose
    python scripts/performance_benchmark.py --wav2lip-model .data/models/wav2lip.onnx   # your converted model
    python scripts/performance_benchmark.py --sections wav2lip-streaming --quick   # whole vs chunked, ~1 min

One session is a 512x512 photo avatar (scikit-image's astronaut, registered by the real registration code)
speaking espeak-ng Persian and English at 25 fps. Stages are timed in CPU time of the process (all its
threads) and in wall time; a real-time factor (RTF) is seconds of work per second of speech, so 0.125
means a core renders 8 sessions at once. Without ``--wav2lip-model`` Wav2Lip runs with random weights of
the real architecture: the speed is the real model's, the pictures are noise. Each engine runs in its own
process, so its peak memory is its own. Other work on the machine slows wall-clock figures: the load
average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from scripts import report_table

FPS = 25
RATE = 16_000
CHUNK_FRAMES = 12  # the lip-sync processor's default chunk (CHUNK_FRAMES)
SENTENCES = (
    ("fa", "سلام، حال شما چطور است؟ امروز هوا خیلی خوب است و ما با دوستان به پارک می‌رویم."),
    ("en", "Good morning everyone. Today we will talk about the weather, the news, and a few good books."),
)
TARGET_EMBEDDED_RTF = 0.125
TARGET_PIPELINE_SHARE = 0.85  # the Wav2Lip pipeline within 15% of bare inference
Report = dict[str, Any]


@dataclass(frozen=True)
class Config:
    quick: bool
    verbose: bool
    threads: int
    wav2lip_model: str | None
    batch_sizes: tuple[int, ...]
    int8: bool
    started: float = field(default_factory=time.perf_counter)


# ---------------------------------------------------------------- shared helpers (run in each child)


def say(cfg: Config, message: str, *, detail: bool = False) -> None:
    if detail and not cfg.verbose:
        return
    print(f"[{time.perf_counter() - cfg.started:6.1f}s] {message}", flush=True)


def espeak(text: str, voice: str) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng as float32 mono at 16 kHz."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    times = np.arange(int(len(pcm) * RATE / rate)) / RATE
    return np.interp(times, np.arange(len(pcm)) / rate, pcm).astype(np.float32)


def speech(cfg: Config) -> npt.NDArray[np.float32]:
    """Persian then English speech; --quick keeps about four seconds."""
    audio = np.concatenate([espeak(text, voice) for voice, text in SENTENCES])
    return audio[: 4 * RATE] if cfg.quick else audio


def sample_avatar() -> Any:
    """The astronaut photo registered exactly as an upload would be."""
    import cv2
    import skimage.data

    from processors.registration.analyse import analyse_upload

    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return analyse_upload(png.tobytes(), avatar_id="sample", filename="astronaut.png").face_data


def jobs_for(avatar: Any, audio: npt.NDArray[np.float32], chunk: int = CHUNK_FRAMES) -> list[Any]:
    """The audio cut into consecutive render jobs of ``chunk`` frames, as the processor cuts a request."""
    from processors.lipsync.engines.base import SAMPLES_PER_FRAME, RenderJob

    n_frames = len(audio) // SAMPLES_PER_FRAME
    return [RenderJob(avatar, audio[start * SAMPLES_PER_FRAME : (start + size) * SAMPLES_PER_FRAME], start, size)
            for start in range(0, n_frames, chunk) for size in [min(chunk, n_frames - start)]]


class Clock:
    """Accumulates wall and CPU seconds per stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time[T](self, stage: str, work: Callable[..., T], *args: Any) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work(*args)
        self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - wall
        self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - cpu
        return result


def stage_rows(clock: Clock, seconds: float) -> list[Report]:
    totals = [(stage, clock.cpu[stage], clock.wall[stage]) for stage in clock.wall]
    totals.append(("total", sum(clock.cpu.values()), sum(clock.wall.values())))
    return [{"stage": stage, "cpu_ms_per_s": 1000 * cpu / seconds, "wall_ms_per_s": 1000 * wall / seconds,
             "rtf_cpu": cpu / seconds, "rtf_wall": wall / seconds} for stage, cpu, wall in totals]


def encode(clock: Clock, frames_by_job: Sequence[Sequence[Any]], audio: npt.NDArray[np.float32]) -> None:
    """H.264 + AAC fragments of each job, through the processor's persistent fMP4 writer."""
    from processors.lipsync.media import FragmentedMp4Writer

    writer = FragmentedMp4Writer(512, 512, fps=FPS, audio_rate=RATE, crf=23)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    spf = RATE // FPS
    start = 0
    for frames in frames_by_job:
        chunk = pcm[start * spf : (start + len(frames)) * spf]
        clock.time("encode (H.264+AAC)", writer.write, frames, chunk)
        start += len(frames)
    clock.time("encode (H.264+AAC)", writer.close)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- sections


def bench_embedded(cfg: Config) -> Report:
    from processors.lipsync.audio_features import mouth_track
    from processors.lipsync.engines.embedded import EmbeddedEngine

    audio = speech(cfg)
    seconds = len(audio) / RATE
    say(cfg, f"embedded: registering the sample avatar, {seconds:.1f} s of speech")
    avatar = sample_avatar()
    engine = EmbeddedEngine()
    engine.prepare(avatar)  # as when a session selects its avatar
    jobs = jobs_for(avatar, audio)
    engine.render(jobs[0])  # first-call costs (cv2 thread pools) are start-up, not per request
    clock = Clock()
    say(cfg, f"embedded: one session, {sum(j.n_frames for j in jobs)} frames at 512x512 in {len(jobs)} chunks")
    frames_by_job = []
    for job in jobs:
        clock.time("features", mouth_track, job.audio, job.n_frames)
        # render() computes the features again: its time minus the features is the warp + blend
        frames_by_job.append(clock.time("render", engine.render, job))
    clock.wall["warp + blend"] = clock.wall.pop("render") - clock.wall["features"]
    clock.cpu["warp + blend"] = clock.cpu.pop("render") - clock.cpu["features"]
    encode(clock, frames_by_job, audio)
    stages = stage_rows(clock, seconds)
    say(cfg, f"embedded: RTF {stages[-1]['rtf_cpu']:.3f} (CPU) incl. encoding")
    batches = []
    for batch in cfg.batch_sizes:
        many = [jobs[i % len(jobs)] for i in range(batch)]
        started = time.perf_counter()
        rendered = engine.render_many(many)
        elapsed = time.perf_counter() - started
        frames = sum(len(f) for f in rendered)
        batches.append({"batch_jobs": batch, "frames": frames, "fps": frames / elapsed})
        say(cfg, f"embedded: render_many of {batch} sessions' chunks: {frames / elapsed:.0f} frames/s", detail=True)
    return {"seconds_of_speech": seconds, "stages": stages, "batches": batches, "peak_rss_mb": peak_rss_mb()}


def bench_quality(cfg: Config) -> Report:
    """The lip-sync measure of scripts/benchmark_lipsync_quality.py on this script's two sentences: the lips
    re-read on the rendered frames, scored against espeak-ng's own phoneme timings (that script runs the
    full corpus through the processor cores; this is the engines' quick check)."""
    from processors.lipsync.engines.base import RenderJob
    from processors.lipsync.engines.embedded import EmbeddedEngine
    from processors.lipsync.visemes import PAUSE, viseme_onsets
    from scripts.lipsync_quality.calibration import SAMPLE_THRESHOLDS
    from scripts.lipsync_quality.landmarks import lip_track
    from scripts.lipsync_quality.metrics import score_clip, timing_passes
    from scripts.lipsync_quality.phonetics import speech_span
    from scripts.lipsync_quality.speech import espeak_utterance
    from scripts.lipsync_quality.timing import pooled

    avatar = sample_avatar()
    engines: list[tuple[str, Any]] = [("embedded", EmbeddedEngine())]
    if cfg.wav2lip_model:
        from processors.lipsync.engines.wav2lip import Wav2LipEngine

        engines.append(("wav2lip", Wav2LipEngine(cfg.wav2lip_model, threads=cfg.threads)))
    rows = []
    for name, engine in engines:
        for voice, text in SENTENCES:
            spoken = espeak_utterance(voice, text)
            n = len(spoken.audio) // (RATE // FPS)
            # The pause mark ends the last phoneme where the speech ends, as the TTS processor sends it.
            marks = [*spoken.events, (speech_span(spoken.audio, RATE)[1], PAUSE)]
            say(cfg, f"quality: {name} on {voice} speech, re-reading the lips in {n} frames")
            frames = engine.render(RenderJob(avatar, spoken.audio, 0, n, viseme_onsets(marks)))
            score = score_clip(lip_track(frames), spoken.phones, spoken.pauses, FPS, SAMPLE_THRESHOLDS)
            lag, correlation = pooled(score.lags).best()
            rows.append({"engine": name, "language": voice, "frames": n, "bilabial": score.bilabial.share,
                         "rounding": score.rounding, "labiodental": score.labiodental.share,
                         "silence": score.silence, "lag_ms": 1000 * lag, "lag_correlation": correlation,
                         "timing_ok": timing_passes(lag, correlation)})
    return {"rows": rows, "peak_rss_mb": peak_rss_mb()}


def quality_targets_met(row: Report) -> int:
    """How many of the five lip-sync targets (scripts/benchmark_lipsync_quality.py) a quality row meets."""
    from scripts.lipsync_quality import metrics

    return sum([row["bilabial"] >= metrics.TARGET_BILABIAL, row["rounding"] <= metrics.TARGET_ROUNDING,
                row["labiodental"] >= metrics.TARGET_LABIODENTAL, row["silence"] >= metrics.TARGET_SILENCE,
                bool(row["timing_ok"])])


def wav2lip_model(cfg: Config, folder: str, variant: str) -> tuple[str, Report]:
    """The model to time: the user's, or random weights of the real architecture (fp32 / fp32 with the
    ConvTranspose rewrite / int8 with it). Runs in a process of its own, so building and quantising the
    model (several times the model's size in memory) does not count in the serving process's peak."""
    if cfg.wav2lip_model and variant == "fp32":
        return cfg.wav2lip_model, {"weights": cfg.wav2lip_model}
    from scripts.wav2lip.convert import default_calibration_feeds, write_model
    from scripts.wav2lip.graph import random_state_dict, wav2lip_architecture

    arch = wav2lip_architecture()
    path = Path(folder) / f"wav2lip-{variant}.onnx"
    calibration = default_calibration_feeds(frames=32) if variant == "int8" else None
    say(cfg, f"wav2lip {variant}: building the model (36.3 M parameters, random weights)"
             f"{' and quantising it' if variant == 'int8' else ''}")
    report = write_model(random_state_dict(arch, seed=0), path, int8=variant == "int8",
                         rewrite_transposed=variant != "fp32", calibration=calibration,
                         progress=lambda m: say(cfg, f"  {m}", detail=True))
    details: Report = {"weights": "random", "build_s": report.seconds, "build_peak_rss_mb": peak_rss_mb()}
    if report.int8_mean_error_levels is not None:
        details["int8_vs_fp32_mean_levels"] = report.int8_mean_error_levels
    return str(path), details


def bench_wav2lip(cfg: Config, variant: str, path: str, details: Report) -> Report:
    from processors.lipsync.engines.wav2lip import Wav2LipEngine

    audio = speech(cfg)
    avatar = sample_avatar()
    say(cfg, f"wav2lip {variant}: calibrating the batch size as at start-up")
    engine = Wav2LipEngine(path, batch_size=0, threads=cfg.threads)
    engine.prepare_avatar(avatar)
    details = {**details, "provider": engine.provider, "auto_batch": engine.batch_size,
               "calibration_ms_per_frame": {str(b): 1000 * t for b, t in engine.calibration.items()}}
    auto_batch = engine.batch_size
    batches = [bench_batch(cfg, variant, engine, avatar, audio, batch) for batch in cfg.batch_sizes]
    engine.batch_size = auto_batch
    stages = one_session_stages(cfg, variant, engine, avatar, audio)
    return {**details, "batches": batches, "stages": stages, "peak_rss_mb": peak_rss_mb()}


def streaming_request(cfg: Config) -> list[Any]:
    """Persian then English as a request of two v3 segments (16 kHz playback and lip-sync copy, whole frames)."""
    from processors.lipsync.engines.base import SAMPLES_PER_FRAME
    from schemas.speech import SpeechSegment, SpeechSegmentMeta

    pieces = [espeak(text, voice) for voice, text in SENTENCES]
    if cfg.quick:  # 3 s in all
        pieces = [pieces[0][: 40 * SAMPLES_PER_FRAME], pieces[1][: 35 * SAMPLES_PER_FRAME]]
    segments, start = [], 0
    for index, piece in enumerate(pieces):
        frames = -(-len(piece) // SAMPLES_PER_FRAME)
        pcm = np.zeros(frames * SAMPLES_PER_FRAME, np.int16)
        pcm[: len(piece)] = np.clip(np.round(piece * 32768.0), -32768, 32767)
        meta = SpeechSegmentMeta(
            request_id="bench-streaming", session_id="bench", avatar_id="sample", segment_index=index,
            is_last=index == len(pieces) - 1, text=f"part {index}", spoken=f"part {index}", language="en",
            sample_rate=RATE, sample_count=len(pcm), start_ms=start * 1000 // RATE, start_sample=start,
            lipsync_sample_rate=RATE, lipsync_sample_count=len(pcm))
        segments.append(SpeechSegment(meta, pcm.astype("<i2").tobytes(), pcm.astype("<i2").tobytes()))
        start += len(pcm)
    return segments


def bench_streaming(cfg: Config, path: str, details: Report) -> Report:
    """A request streamed through the lip-sync core in chunks (6, then 12 frames) against one whole render.

    One frame per inference, so a frame's output depends only on its own inputs (ONNX Runtime may move a
    float by an ulp with the batch's composition). "Before" is the mel of each job's own audio (the
    per-job path this project used), applied to the same jobs.
    """
    from processors.lipsync.core import LipSyncCore
    from processors.lipsync.engines.base import RenderJob
    from processors.lipsync.engines.wav2lip import Wav2LipEngine
    from processors.lipsync.mel import mel_windows

    engine = Wav2LipEngine(path, batch_size=1, threads=cfg.threads)
    avatar = sample_avatar()
    engine.prepare_avatar(avatar)
    segments = streaming_request(cfg)
    jobs: list[Any] = []
    chunked: list[Any] = []

    class Recording:
        name = engine.name
        lookahead_frames = engine.lookahead_frames

        def render(self, job: Any) -> list[Any]:
            jobs.append(job)
            frames = engine.render(job)
            chunked.extend(frames)
            return frames

    core = LipSyncCore(Recording(), lambda _avatar_id: avatar)
    say(cfg, f"wav2lip streaming: {len(segments)} segments through the lip-sync core, then as one job")
    for segment in segments:
        list(core.handle(segment))
    audio = np.concatenate([np.frombuffer(s.lipsync_pcm16, dtype="<i2") for s in segments]).astype(np.float32)
    audio /= 32768.0
    n_frames = sum(job.n_frames for job in jobs)
    whole = engine.render(RenderJob(avatar, audio, 0, n_frames))
    reference = mel_windows(audio, n_frames)
    after = np.concatenate([engine.mel_inputs([job]) for job in jobs])
    before = np.concatenate([mel_windows(job.audio, job.n_frames) for job in jobs])
    differ = [i for i, (a, b) in enumerate(zip(chunked, whole, strict=True)) if not np.array_equal(a, b)]
    pixels = max((int(np.abs(a.astype(int) - b).max()) for a, b in zip(chunked, whole, strict=True)), default=0)
    row: Report = {**details, "frames": n_frames, "jobs": len(jobs), "segments": len(segments),
                   "frames_differing": len(differ), "max_pixel_difference": pixels,
                   "mel_windows_differing_after": int((after != reference).any(axis=(1, 2, 3)).sum()),
                   "max_mel_difference_after": float(np.abs(after - reference).max()),
                   "mel_windows_differing_before": int((before != reference).any(axis=(1, 2, 3)).sum()),
                   "max_mel_difference_before": float(np.abs(before - reference).max()),
                   "peak_rss_mb": peak_rss_mb()}
    say(cfg, f"wav2lip streaming: {len(differ)} of {n_frames} frames differ; mel max difference "
             f"{row['max_mel_difference_before']:.3f} per job -> {row['max_mel_difference_after']:.3f} on the timeline")
    return row


def bench_batch(cfg: Config, variant: str, engine: Any, avatar: Any, audio: npt.NDArray[np.float32],
                batch: int) -> Report:
    """Bare ONNX Runtime vs the whole engine (mel, crops, inference, paste-back) at one batch size.

    Each round runs one bare batch and then the pipeline on one job of exactly ``batch`` frames (a whole
    batch), through the same stages render_many chains. Rounds are paired so that other load on the
    machine hits both alike: the median of the per-round ratios is the pipeline's share of the bare rate.
    The model's share of the pipeline's own time says the same without a second measurement."""
    from processors.lipsync.engines.base import SAMPLES_PER_FRAME, RenderJob

    engine.batch_size = batch
    rounds = 4 if cfg.quick else 8
    n_frames = len(audio) // SAMPLES_PER_FRAME - batch
    starts = [(i * 7 * batch) % max(1, n_frames) for i in range(rounds)]
    jobs = [RenderJob(avatar, audio[s * SAMPLES_PER_FRAME : (s + batch) * SAMPLES_PER_FRAME], s, batch) for s in starts]
    prepared = engine.prepare(jobs[:1])
    feeds = {engine.signature.mel_input: prepared.mel, engine.signature.face_input: prepared.face}
    engine.session.run(None, feeds)
    bare, pipeline, model = [], [], []
    for job in jobs:
        started = time.perf_counter()
        engine.session.run(None, feeds)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        batch_in = engine.prepare([job])
        inferred = time.perf_counter()
        faces = engine.infer(batch_in.mel, batch_in.face)
        model.append(time.perf_counter() - inferred)
        engine.paste(batch_in, faces)
        pipeline.append(time.perf_counter() - started)
    share = float(np.median(np.array(bare) / np.array(pipeline)))
    row = {"batch": batch, "frames": rounds * batch, "bare_fps": batch / float(np.median(bare)),
           "pipeline_fps": batch / float(np.median(pipeline)), "pipeline_share": share,
           "model_share_of_pipeline": float(np.median(np.array(model) / np.array(pipeline)))}
    say(cfg, f"wav2lip {variant} batch {batch}: bare {row['bare_fps']:.1f} fps, pipeline {row['pipeline_fps']:.1f} "
             f"fps (paired {100 * share:.0f}%, model {100 * row['model_share_of_pipeline']:.0f}% of the pipeline)")
    return row


def one_session_stages(cfg: Config, variant: str, engine: Any, avatar: Any,
                       audio: npt.NDArray[np.float32]) -> list[Report]:
    """One session's chunks through the engine's stages and the encoder, at the calibrated batch size."""
    from processors.lipsync.engines.wav2lip import PreparedBatch

    seconds = (16 if cfg.quick else 48) / FPS  # the model is slow on a CPU: a couple of seconds suffice
    jobs = jobs_for(avatar, audio[: int(seconds * RATE)])
    clock = Clock()
    frames_by_job = []
    say(cfg, f"wav2lip {variant}: one session, {seconds:.1f} s at 512x512 in {len(jobs)} chunks, "
             f"batch {engine.batch_size}")
    for job in jobs:
        mel = clock.time("mel", engine.mel_inputs, [job])
        batch: PreparedBatch = clock.time("crops + inputs", engine.face_inputs, [job], mel)
        faces = clock.time("inference", engine.infer, batch.mel, batch.face)
        frames_by_job.append(clock.time("paste-back", engine.paste, batch, faces)[0])
    encode(clock, frames_by_job, audio[: int(seconds * RATE)])
    return stage_rows(clock, seconds)


SECTIONS = ("embedded", "quality", "wav2lip-fp32", "wav2lip-fp32-rewritten", "wav2lip-int8", "wav2lip-streaming")


def run_section(name: str, cfg: Config, model_folder: str) -> Report:
    """One section in fresh processes: its peak RSS is its own, and no engine warms another's caches."""
    if name == "embedded":
        return in_child(bench_embedded, cfg)
    if name == "quality":
        return in_child(bench_quality, cfg)
    if name == "wav2lip-streaming":  # the fp32 model (or the user's): the inputs do not depend on it
        path, details = in_child(wav2lip_model, cfg, model_folder, "fp32")
        return in_child(bench_streaming, cfg, path, details)
    variant = name.removeprefix("wav2lip-")
    path, details = in_child(wav2lip_model, cfg, model_folder, variant)
    return in_child(bench_wav2lip, cfg, variant, path, details)


def _child_main(connection: Any, work: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        connection.send((True, work(*args)))
    except BaseException as error:  # the parent re-raises it with the child's message
        connection.send((False, f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def in_child[T](work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a spawned process; the process never outlives this call, even on Ctrl-C."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, work, args), daemon=True)
    child.start()
    sender.close()
    try:
        ok, result = receiver.recv()
    except EOFError:
        raise RuntimeError(f"the benchmark process died (exit code {child.exitcode})") from None
    finally:
        if child.is_alive():
            child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join()
    if not ok:
        raise RuntimeError(f"benchmark section failed: {result}")
    return result


# ---------------------------------------------------------------- report


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return report_table.table(title, header, rows, _cell)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_tables(report: Report) -> str:
    parts = []
    speed_rows: list[list[object]] = []
    if "embedded" in report:
        for row in report["embedded"]["batches"]:
            speed_rows.append(["embedded", "-", f"{row['batch_jobs']} chunks", "-", row["fps"], "-", "-"])
    for key in ("wav2lip-fp32", "wav2lip-fp32-rewritten", "wav2lip-int8"):
        if key in report:
            for row in report[key]["batches"]:
                auto = " (auto)" if row["batch"] == report[key]["auto_batch"] else ""
                speed_rows.append(["wav2lip", key.removeprefix("wav2lip-"), f"{row['batch']}{auto}", row["bare_fps"],
                                   row["pipeline_fps"], f"{100 * row['pipeline_share']:.0f}%",
                                   f"{100 * row['model_share_of_pipeline']:.1f}%"])
    if speed_rows:
        parts.append(table("Frames per second by engine and batch size (wall clock, medians; pipeline/bare: median "
                           "of paired rounds)", ["engine", "model", "batch", "bare ORT fps", "pipeline fps",
                                                 "pipeline/bare", "model share of pipeline"], speed_rows))
    stage_table: list[list[object]] = []
    for key in ("embedded", "wav2lip-fp32", "wav2lip-fp32-rewritten", "wav2lip-int8"):
        for row in report.get(key, {}).get("stages", []):
            stage_table.append([key, row["stage"], row["cpu_ms_per_s"], row["rtf_cpu"], row["rtf_wall"]])
    if stage_table:
        parts.append(table("Real-time factor per stage, one session, 512x512 at 25 fps (work seconds per second of "
                           "speech)", ["engine", "stage", "CPU ms per s", "RTF (CPU)", "RTF (wall)"], stage_table))
    memory = [[key, report[key]["peak_rss_mb"], report[key].get("build_peak_rss_mb", "-")]
              for key in SECTIONS if key in report]
    parts.append(table("Peak memory (RSS of the section's own process)",
                       ["section", "serving MB", "model build MB"], memory))
    if "quality" in report:
        parts.append(table("Lip-sync quality: lips re-read with dlib, scored against espeak-ng's phoneme timings",
                           ["engine", "speech", "frames", "bilabial", "rounding", "f/v raise", "silence",
                            "lag ms (r)", "targets met"],
                           [[r["engine"], r["language"], r["frames"], r["bilabial"], r["rounding"], r["labiodental"],
                             r["silence"], f"{r['lag_ms']:+.0f} ({r['lag_correlation']:.2f})",
                             f"{quality_targets_met(r)}/5"] for r in report["quality"]["rows"]]))
    if "wav2lip-streaming" in report:
        row = report["wav2lip-streaming"]
        parts.append(table(f"Wav2Lip whole vs chunked: {row['frames']} frames, {row['segments']} segments, "
                           f"{row['jobs']} chunks through the lip-sync core", ["mel path", "windows differing",
                                                                               "max mel difference"],
                           [["per job (before)", row["mel_windows_differing_before"],
                             row["max_mel_difference_before"]],
                            ["request timeline (now)", row["mel_windows_differing_after"],
                             row["max_mel_difference_after"]]]))
    parts.append(table("Targets", ["target", "measured", "met"], [
        [t["target"], t["measured"], "yes" if t["met"] else "NO"] for t in report["targets"]]))
    return "\n\n".join(parts)


def targets(report: Report) -> list[Report]:
    found = []
    if "embedded" in report:
        rtf = report["embedded"]["stages"][-1]["rtf_cpu"]
        found.append({"target": f"embedded 512x512 incl. encoding RTF <= {TARGET_EMBEDDED_RTF}",
                      "measured": f"{rtf:.3f} (CPU)", "met": rtf <= TARGET_EMBEDDED_RTF})
    for key in ("wav2lip-fp32", "wav2lip-int8"):
        if key in report:
            auto = report[key]["auto_batch"]
            row = next((r for r in report[key]["batches"] if r["batch"] == auto), max(
                report[key]["batches"], key=lambda r: r["pipeline_fps"]))
            found.append({"target": f"{key} pipeline within 15% of bare ORT (batch {row['batch']})",
                          "measured": f"{100 * row['pipeline_share']:.0f}% paired, model "
                                      f"{100 * row['model_share_of_pipeline']:.1f}% of pipeline time",
                          "met": row["pipeline_share"] >= TARGET_PIPELINE_SHARE})
    if "wav2lip-streaming" in report:
        row = report["wav2lip-streaming"]
        found.append({"target": "wav2lip whole vs chunked: 0 frames differ (bit-exact model inputs)",
                      "measured": f"{row['frames_differing']} of {row['frames']} frames, "
                                  f"{row['mel_windows_differing_after']} mel windows",
                      "met": row["frames_differing"] == 0 and row["mel_windows_differing_after"] == 0})
    for row in report.get("quality", {}).get("rows", []):
        if row["engine"] == "embedded":
            met = quality_targets_met(row)
            found.append({"target": f"embedded lip sync on {row['language']} speech: the 5 quality targets",
                          "measured": f"{met}/5 (bilabial {row['bilabial']:.2f}, lag {row['lag_ms']:+.0f} ms)",
                          "met": met == 5})
    return found


def machine() -> Report:
    import onnxruntime

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "load_average": os.getloadavg()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the full report as JSON here (e.g. report.json)")
    parser.add_argument("--verbose", action="store_true", help="print every measurement as it is made")
    parser.add_argument("--quick", action="store_true", help="short clips, batch sizes 1 and 8, no int8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="ONNX Runtime threads")
    parser.add_argument("--wav2lip-model", help="a converted Wav2Lip ONNX model to time (and whose lip sync to "
                        "measure) instead of random weights")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), help="run only these sections")
    return parser.parse_args(argv)


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A termination request unwinds like Ctrl-C, so the running section's process is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = Config(quick=args.quick, verbose=args.verbose, threads=args.threads, wav2lip_model=args.wav2lip_model,
                 batch_sizes=(1, 8) if args.quick else (1, 4, 8, 16), int8=not args.quick)
    names = args.sections or [n for n in SECTIONS if cfg.int8 or n not in ("wav2lip-int8", "wav2lip-fp32-rewritten")]
    report: Report = {"machine": machine(), "config": {k: v for k, v in asdict(cfg).items() if k != "started"}}
    say(cfg, f"benchmarking {', '.join(names)} on {os.cpu_count()} CPUs (load average "
             f"{report['machine']['load_average'][0]:.1f})")
    with tempfile.TemporaryDirectory() as model_folder:
        for name in names:
            report[name] = run_section(name, cfg, model_folder)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["targets"] = targets(report)
    print()
    print(render_tables(report))
    print(f"\nload average at start / end: {report['machine']['load_average'][0]:.1f} / "
          f"{report['machine']['load_average_end'][0]:.1f} on {os.cpu_count()} CPUs")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        sys.exit(130)
