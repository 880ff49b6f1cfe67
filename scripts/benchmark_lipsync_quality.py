"""Measures lip-sync quality as a viewer sees it: lips re-read on the output video, scored against the TTS's timings.

    python scripts/benchmark_lipsync_quality.py                    # 20+20 sentences, both avatars: ~20 min on
                                                                   # 2 idle cores, over an hour on busy ones
    python scripts/benchmark_lipsync_quality.py --sentences 4      # a quick run, a fifth of that
    python scripts/benchmark_lipsync_quality.py --tts espeak --avatars photo --output quality.json
    python scripts/benchmark_lipsync_quality.py --load-test        # also scripts/load_test.py (long)

Each request (two sentences, Persian or English) goes through the service's own cores: the TTS core with
the backend under test gives the ``avatar.speech`` segments (with their phoneme timings), the lip-sync core
renders and encodes them, and the MP4 is decoded back. dlib's 68 points are re-read on every decoded frame
and scored (``scripts/lipsync_quality``) against the phoneme timings of the same segments:

* bilabial closure: share of p/b/m shut at their middle frame (and parted near them)    target >= 0.9
* rounding: mean mouth width on o/u/w over i/e                                          target <= 0.85
* labiodental: share of f/v whose lower lip rises to the teeth (raised, neither shut nor open)  target >= 0.7
* silence: share of pause frames at rest (for a mouth that opens when it speaks)        target >= 0.95
* timing: lag of best alignment with the phonemes' opening, and the correlation there:
  within ITU-R BT.1359's detectability (picture at most 45 ms late, 125 ms early), correlation >= 0.5

Paths: "before" is the engine without articulation (``EmbeddedEngine(articulation=False)``: the mouth
follows the loudness), "after" the articulating engine on the TTS's timings; "openai + estimator" is the
openai backend against the local OpenAI-compatible server (espeak-ng behind HTTP, no timings), articulated
from the audio estimator, scored against espeak-ng's timings of the same text. piper (English) runs when
its voice is installed. The must-not-regress figures come from the same run: the lip-sync core's CPU time
per second of speech (render + H.264, 512x512 at 25 fps, one session) and, through
scripts/benchmark_speech.py, the TTS's first segment latency.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.viseme_estimator import VisemeEstimator
from processors.tts.engines.base import TtsEngine
from processors.tts.engines.espeak import EspeakEngine
from schemas.avatar import AvatarFaceData
from scripts import report_table
from scripts.lipsync_quality import avatars, metrics, pipeline
from scripts.lipsync_quality.calibration import SAMPLE_THRESHOLDS, calibrate
from scripts.lipsync_quality.landmarks import face_box, lip_track
from scripts.lipsync_quality.metrics import ClipScore, Thresholds, score_clip, timing_passes
from scripts.lipsync_quality.phonetics import pauses
from scripts.lipsync_quality.sentences import SENTENCES
from scripts.lipsync_quality.speech import ENGINE_RATE, Utterance
from scripts.lipsync_quality.timing import pooled

ROOT = Path(__file__).resolve().parent.parent
FPS = 25
SENTENCES_PER_REQUEST = 2  # a sentence pause inside every request: pause frames to judge
MAX_ALIGN_S = 0.1
TARGET_RTF = 0.1
TARGET_FIRST_SEGMENT_MS = 100.0
OPENAI_KEY = "quality-benchmark-key"


@dataclass(frozen=True)
class Route:
    """One way through the service: a TTS backend's segments, an engine, and where articulation comes from."""

    name: str
    tts: str  # espeak, piper, openai
    articulated: bool
    estimated: bool = False  # onsets from the audio estimator (the segments carry no timings)


PATHS = (
    Route("espeak before", "espeak", articulated=False),
    Route("espeak after", "espeak", articulated=True),
    Route("piper before", "piper", articulated=False),
    Route("piper after", "piper", articulated=True),
    Route("openai + estimator", "openai", articulated=True, estimated=True),
)


@dataclass
class Tally:
    """Scores and costs of one (language, avatar, path), summed over its requests."""

    score: ClipScore = field(default_factory=ClipScore)
    cpu_s: float = 0.0
    speech_s: float = 0.0
    frames: int = 0

    @property
    def rtf(self) -> float:
        return self.cpu_s / self.speech_s if self.speech_s else math.nan


@dataclass
class Run:
    started: float = field(default_factory=time.perf_counter)
    tallies: dict[tuple[str, str, str], Tally] = field(default_factory=dict)
    calibration: dict[str, Thresholds] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", flush=True)


# ---------------------------------------------------------------- the backends and engines


def tts_backends(wanted: Sequence[str], run: Run) -> tuple[dict[str, TtsEngine], Callable[[], None]]:
    """The TTS backends to speak with (espeak always: it is the truth for the openai path)."""
    backends: dict[str, TtsEngine] = {"espeak": EspeakEngine()}
    stop: Callable[[], None] = _nothing
    if "piper" in wanted:
        try:
            from processors.tts.engines.piper import build_piper

            backends["piper"] = build_piper(None, None, defaults={}, threads=1, cache_dir=None)
        except Exception as error:  # a missing voice is a skipped row, not a failed benchmark
            run.notes.append(f"piper skipped: {type(error).__name__}: {error}")
    if "openai" in wanted:
        from processors.tts.engines.openai_tts import OpenAiEngine
        from tests.support.local_openai_server import LocalSpeechServer

        server = LocalSpeechServer(api_key=OPENAI_KEY).start()
        backends["openai"] = OpenAiEngine(OPENAI_KEY, model="tts-1", voice="alloy", base_url=server.base_url)
        stop = server.stop
    return backends, stop


def _nothing() -> None:
    return None


def requests(language: str, count: int) -> list[str]:
    """``count`` sentences of ``language`` in requests of ``SENTENCES_PER_REQUEST``."""
    chosen = SENTENCES[language][:count]
    return [" ".join(chosen[i : i + SENTENCES_PER_REQUEST]) for i in range(0, len(chosen), SENTENCES_PER_REQUEST)]


def aligned(reference: Utterance, audio: np.ndarray) -> float:
    """Seconds by which ``audio`` lags ``reference`` (the same words through another route), by
    cross-correlating their loudness envelopes within ``MAX_ALIGN_S``."""
    def envelope(signal: np.ndarray) -> np.ndarray:
        size = ENGINE_RATE // 1000
        usable = signal[: signal.shape[0] // size * size].astype(np.float64)
        return np.sqrt(np.mean(usable.reshape(-1, size) ** 2, axis=1))

    a, b = envelope(reference.audio), envelope(audio)
    length = min(a.shape[0], b.shape[0])
    a, b = a[:length] - a[:length].mean(), b[:length] - b[:length].mean()
    lags = range(-int(MAX_ALIGN_S * 1000), int(MAX_ALIGN_S * 1000) + 1)
    best = max(lags, key=lambda lag: float(np.dot(a[max(-lag, 0) : length - max(lag, 0)],
                                                  b[max(lag, 0) : length - max(-lag, 0)])))
    return best / 1000


def shifted(utterance: Utterance, seconds: float, audio: np.ndarray) -> Utterance:
    """``utterance``'s timings moved ``seconds`` later, on ``audio``'s clock."""
    phones = tuple(replace(p, start=p.start + seconds, end=p.end + seconds) for p in utterance.phones)
    return replace(utterance, audio=audio, phones=phones, pauses=tuple(pauses(audio, ENGINE_RATE)))


# ---------------------------------------------------------------- the measurement loop


def score_request(frames: list[np.ndarray], utterance: Utterance, thresholds: Thresholds) -> ClipScore:
    return score_clip(lip_track(frames, face_box(frames[0])), utterance.phones, utterance.pauses, FPS, thresholds)


def measure(run: Run, args: argparse.Namespace, avatar_set: dict[str, AvatarFaceData],
            backends: dict[str, TtsEngine]) -> None:
    engines = {True: EmbeddedEngine(), False: EmbeddedEngine(articulation=False)}
    estimator = VisemeEstimator.load()
    cores = {name: pipeline.tts_core(engine) for name, engine in backends.items()}
    for avatar in avatar_set.values():
        for engine in engines.values():
            engine.prepare(avatar)  # as when a session selects its avatar: plans are start-up, not per request
    paths = [p for p in PATHS if p.tts in backends]
    for language in args.languages:
        texts = requests(language, args.sentences)
        for number, text in enumerate(texts, 1):
            spoken = {name: pipeline.speak(core, text, language, "benchmark")
                      for name, core in cores.items() if name != "piper" or language == "en"}
            truths = {name: pipeline.truth(segments, language, text) for name, segments in spoken.items()}
            if "openai" in spoken:
                offset = aligned(truths["espeak"], truths["openai"].audio)
                truths["openai"] = shifted(truths["espeak"], offset, truths["openai"].audio)
            for avatar_name, avatar in avatar_set.items():
                for path in paths:
                    if path.tts not in spoken:
                        continue
                    rendered = pipeline.render(engines[path.articulated], avatar, spoken[path.tts],
                                               estimator.estimate if path.estimated else None)
                    score = score_request(rendered.frames, truths[path.tts], run.calibration[avatar_name])
                    tally = run.tallies.setdefault((language, avatar_name, path.name), Tally())
                    tally.score.merge(score)
                    tally.cpu_s += rendered.cpu_s
                    tally.speech_s += rendered.speech_s
                    tally.frames += len(rendered.frames)
                    rtf = rendered.cpu_s / max(rendered.speech_s, 1e-9)
                    run.say(f"{language} {number}/{len(texts)} {avatar_name:5s} {path.name:18s} "
                            f"{len(rendered.frames):4d} frames  bilabial {score.bilabial.hits}/{score.bilabial.judged}"
                            f"  f/v {score.labiodental.hits}/{score.labiodental.judged}  RTF {rtf:.3f}")


# ---------------------------------------------------------------- must not regress


def first_segment_latency(run: Run, runs: int) -> dict[str, Any]:
    """scripts/benchmark_speech.py on espeak-ng: text accepted → first segment on Kafka."""
    run.say(f"TTS first segment latency: scripts/benchmark_speech.py --backends espeak --runs {runs}")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "speech.json"
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_speech.py"), "--backends", "espeak",
                               "--runs", str(runs), "--rounds", "1", "--output", str(output)],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not output.exists():
            return {"error": (done.stderr or done.stdout)[-800:]}
        return dict(json.loads(output.read_text())["results"][0])


def load_test(run: Run) -> str:
    run.say("scripts/load_test.py --start (its own stack; several minutes)")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_test.py"), "--start"],
                          capture_output=True, text=True, timeout=3600)
    return (done.stdout + done.stderr)[-4000:]


# ---------------------------------------------------------------- report


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return report_table.table(title, header, rows, _cell)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def figures(tally: Tally) -> dict[str, Any]:
    score = tally.score
    lag, correlation = pooled(score.lags).best()
    return {
        "bilabial": score.bilabial.share, "bilabial_n": score.bilabial.judged,
        "rounding": score.rounding, "rounded_n": len(score.rounded_widths), "spread_n": len(score.spread_widths),
        "labiodental": score.labiodental.share, "labiodental_n": score.labiodental.judged,
        "silence": score.silence, "pause_frames": score.pause_frames.judged,
        "open_vowels_opened": score.open_vowels.share,
        "lag_ms": 1000 * lag, "lag_correlation": correlation, "timing_ok": timing_passes(lag, correlation),
        "unknown_phones": score.unknown_phones, "rtf": tally.rtf, "frames": tally.frames,
    }


def passes(row: dict[str, Any]) -> int:
    checks = [row["bilabial"] >= metrics.TARGET_BILABIAL, row["rounding"] <= metrics.TARGET_ROUNDING,
              row["labiodental"] >= metrics.TARGET_LABIODENTAL, row["silence"] >= metrics.TARGET_SILENCE,
              row["timing_ok"]]
    return sum(bool(check) for check in checks)


def quality_tables(report: dict[str, Any]) -> Iterator[str]:
    header = ["path", "bilabial (n)", "rounding (o/u:i/e)", "f/v tuck (n)", "silence (frames)", "lag ms (r)",
              "open vowels", "targets met", "RTF"]
    targets = ["target", ">= 0.90", "<= 0.85", ">= 0.70", ">= 0.95", "-125..+45 (r>=0.5)", "-", "5/5", "<= 0.10"]
    groups: dict[tuple[str, str], list[list[object]]] = {}
    for key, row in report["quality"].items():
        language, avatar, path = key.split("|")
        groups.setdefault((language, avatar), []).append([
            path, f"{_cell(row['bilabial'])} ({row['bilabial_n']})",
            f"{_cell(row['rounding'])} ({row['rounded_n']}:{row['spread_n']})",
            f"{_cell(row['labiodental'])} ({row['labiodental_n']})",
            f"{_cell(row['silence'])} ({row['pause_frames']})",
            f"{row['lag_ms']:+.0f} ({row['lag_correlation']:.2f})", row["open_vowels_opened"],
            f"{passes(row)}/5", f"{row['rtf']:.3f}"])
    names = {"en": "English", "fa": "Persian"}
    for (language, avatar), rows in groups.items():
        yield table(f"{names.get(language, language)}, {avatar} avatar", header, [targets, *rows])


def regress_table(report: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for key, row in report["quality"].items():
        language, avatar, path = key.split("|")
        if path == "espeak after":
            rows.append([f"embedded engine RTF (CPU), {avatar}, {language}, 512x512 25 fps incl. H.264",
                         f"<= {TARGET_RTF}", f"{row['rtf']:.3f}", "yes" if row["rtf"] <= TARGET_RTF else "NO"])
    speech = report.get("first_segment")
    if speech and "error" not in speech:
        p50, p95 = speech["first_segment_p50_ms"], speech["first_segment_p95_ms"]
        rows.append(["TTS first segment after text accepted (espeak, p50 / p95 ms)",
                     f"<= {TARGET_FIRST_SEGMENT_MS:.0f}", f"{p50:.1f} / {p95:.1f}",
                     "yes" if p95 <= TARGET_FIRST_SEGMENT_MS else "NO"])
    elif speech:
        rows.append(["TTS first segment", "-", "failed: " + speech["error"][-60:], "NO"])
    return table("Must not regress", ["figure", "target", "measured", "met"], rows)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20, help="sentences per language (at most 22)")
    parser.add_argument("--languages", nargs="+", choices=["en", "fa"], default=["en", "fa"])
    parser.add_argument("--avatars", nargs="+", choices=["photo", "video"], default=["photo", "video"])
    parser.add_argument("--tts", nargs="+", choices=["espeak", "piper", "openai"],
                        default=["espeak", "piper", "openai"], help="backends whose speech is rendered")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="use the sample photo's written thresholds instead of calibrating each avatar (~20 s)")
    parser.add_argument("--latency-runs", type=int, default=20, help="requests timed for the TTS first segment")
    parser.add_argument("--skip-regress", action="store_true", help="no TTS latency run")
    parser.add_argument("--load-test", action="store_true", help="also run scripts/load_test.py --start (long)")
    parser.add_argument("--output", type=Path, help="write the full report as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run()
    run.say(f"lip-sync quality: {args.sentences} sentences x {', '.join(args.languages)}, avatars "
            f"{', '.join(args.avatars)}, TTS {', '.join(args.tts)} (load average {os.getloadavg()[0]:.1f})")
    builders = {"photo": avatars.sample_photo, "video": avatars.sample_video}
    avatar_set: dict[str, AvatarFaceData] = {}
    for name in args.avatars:
        run.say(f"registering the {name} avatar with the project's analysis")
        avatar_set[name] = builders[name]()
        if args.no_calibrate:
            run.calibration[name] = SAMPLE_THRESHOLDS
            continue
        run.say(f"calibrating the detector on the {name} avatar's first frame (known closed / open mouths)")
        frame = avatar_set[name].frames[0]
        run.calibration[name] = calibrate(np.ascontiguousarray(frame.image), frame.landmarks).thresholds
        run.say(f"  {name}: {run.calibration[name]}")
    backends, stop = tts_backends(args.tts, run)
    try:
        measure(run, args, avatar_set, backends)
    finally:
        stop()
    report: dict[str, Any] = {
        "quality": {"|".join(key): figures(tally) for key, tally in run.tallies.items()},
        "thresholds": {name: vars(t) for name, t in run.calibration.items()},
        "notes": run.notes, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
    }
    if not args.skip_regress:
        report["first_segment"] = first_segment_latency(run, args.latency_runs)
    if args.load_test:
        report["load_test"] = load_test(run)
    print()
    for text in quality_tables(report):
        print(text, end="\n\n")
    print(regress_table(report))
    if "load_test" in report:
        print("\nscripts/load_test.py (tail):\n" + report["load_test"])
    for note in run.notes:
        print(f"note: {note}")
    print("\nthresholds (inter-ocular distances): " + "; ".join(
        f"{name}: closed <= {t.closed}, parted >= {t.parted}, raised >= {t.raised}, tucked <= {t.tucked}"
        for name, t in run.calibration.items()))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=float))
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
