"""Measures whether idle clips rendering in the lip-sync worker delay live first chunks; prints a table.

    python scripts/benchmark_idle_clips.py              # ~2 minutes on 2 cores
    python scripts/benchmark_idle_clips.py --runs 20

The whole service runs as `make run` starts it (embedded broker, a throw-away database). The SDK says
sentences to the sample avatar, one at a time, in blocks that alternate between two conditions (the machine
is shared, so drift falls on both alike):
- quiet: nothing else runs;
- rendering: the lip-sync worker renders idle clips back to back the whole time (the sample's clip is
  deleted from PostgreSQL and asked for again on ``avatar.idle-clips`` as soon as it is stored), so a say()
  finds a clip half rendered.
Each say() follows a 1.5 s pause (a user's turn), in both conditions.
Figures: say() sent → first chunk, p50 / p95 / max per condition, and how many clips rendered meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.kafka import new_producer
from infra.settings import Settings
from producers.client import AvatarProducer, Chunk
from schemas.idle_clip import IdleClipRequest
from schemas.requests import TextRequest
from scripts.benchmark_clients import ENGLISH, PERSIAN, progress, service
from scripts.report_table import table

BLOCK = 5  # says per condition before switching
PAUSE_S = 1.5  # before each say


class ClipChurn:
    """Keeps the worker rendering: delete the sample's stored clip, ask for it, wait until it is back, again."""

    def __init__(self, settings: Settings, avatar_id: str = "sample") -> None:
        self.settings = settings
        self.avatar_id = avatar_id
        self.rendered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip-churn", daemon=True)

    def __enter__(self) -> ClipChurn:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="clip-churn", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        producer = new_producer(self.settings)
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                conn.execute("DELETE FROM idle_clips WHERE avatar_id = %s", (self.avatar_id,))
                request = IdleClipRequest(avatar_id=self.avatar_id, reason="missing", ts_ms=int(time.time() * 1000))
                producer.produce(self.settings.kafka_idle_clip_topic, request.to_kafka(), key=self.avatar_id.encode())
                producer.flush(10)
                deadline = time.monotonic() + 60
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if conn.execute("SELECT 1 FROM idle_clips WHERE avatar_id = %s", (self.avatar_id,)).fetchone():
                        self.rendered += 1
                        break
                    time.sleep(0.05)
        producer.flush(10)


def first_chunk_ms(producer: AvatarProducer, text: str) -> float:
    marks: dict[str, float] = {}

    def on_sent(_request: TextRequest) -> None:
        marks["sent"] = time.perf_counter()

    def on_chunk(_chunk: Chunk) -> None:
        marks.setdefault("first", time.perf_counter())

    producer.say(avatar_id="sample", text=text, on_sent=on_sent, on_chunk=on_chunk)
    return (marks["first"] - marks["sent"]) * 1000


def measure(runs: int) -> tuple[dict[str, list[float]], int]:
    figures: dict[str, list[float]] = {"quiet": [], "rendering idle clips": []}
    with service() as (_stack, settings):
        producer = AvatarProducer(settings)
        producer.warm_up()
        first_chunk_ms(producer, ENGLISH)  # warm the worker's avatar cache and the TTS
        churn = ClipChurn(settings)
        said = 0
        while min(len(values) for values in figures.values()) < runs:
            for condition, values in figures.items():
                progress(f"{condition}: {len(values)}/{runs}")
                with churn if condition != "quiet" else contextlib.nullcontext():
                    for _ in range(BLOCK):
                        # A pause between sentences, as between a user's turns: the clip renders in the pauses.
                        time.sleep(PAUSE_S)
                        values.append(first_chunk_ms(producer, PERSIAN if said % 2 == 0 else ENGLISH))
                        said += 1
        producer.close()
    return figures, churn.rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="says per condition (a multiple of 5)")
    args = parser.parse_args()
    figures, rendered = measure(args.runs)
    rows = []
    for condition, values in figures.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        rows.append((condition, len(values), f"{statistics.median(values):.0f}", f"{p95:.0f}", f"{max(values):.0f}"))
    print(table("SDK say() sent → first chunk (ms), sample avatar, embedded engine",
                ["condition", "runs", "p50", "p95", "max"], rows))
    print(f"idle clips rendered during the 'rendering' runs: {rendered}")


if __name__ == "__main__":
    main()
