"""Measures the client paths: REST /avatar/process, the SDK's say(), the CLI, and the web player in Chromium.

    python scripts/benchmark_clients.py                 # starts broker, database and service; ~1 minute
    python scripts/benchmark_clients.py --runs 20 --output clients.json
    python scripts/benchmark_clients.py --quick         # 3 runs each

Everything runs against the whole service started as `make run` starts it (an embedded broker and a
throw-away database on the local PostgreSQL, or pgserver). Figures per path, p50 / p95 over the runs:
- REST: request sent → response complete, and the gateway's own text accepted → first chunk (X-First-Chunk-Ms);
  the same first chunk while 10-second 720p videos register one after another through the same gateway;
- SDK: say() sent → first chunk read from the session topic, and → whole MP4;
- CLI: `avatar-stream say` wall time, interpreter start-up included;
- player (headless Debian chromium): text sent → first chunk on the WebSocket, → first frame played; the
  smallest margin between a chunk's arrival and its playback time; late chunks; stalls; interrupt click →
  playback halted and → the server's `interrupted` reply.
Gateway memory (RSS) is read before and after the REST runs, which hold whole MP4s in memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.broker import EmbeddedBroker, free_port
from infra.migrations import throwaway_database
from infra.settings import PROJECT_ROOT, Settings
from producers.client import AvatarProducer, Chunk
from schemas.requests import TextRequest
from tests.integration.stack import RunningStack, start_stack, stop_stack

PERSIAN = "سلام، حال شما چطور است؟ امروز هوا خیلی خوب است."
ENGLISH = "Good morning. How are you today? The weather is lovely."
LONG_ENGLISH = ("This is a long sentence that keeps the avatar talking for quite a while, so that there is time "
                "to interrupt it. It goes on and on, with more words, and more clauses.")
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


@dataclass
class Figures:
    """Named series of measurements (milliseconds unless the name says otherwise)."""

    series: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.series.setdefault(name, []).append(value)

    def rows(self) -> Iterator[tuple[str, int, float, float, float]]:
        for name, values in self.series.items():
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            yield name, len(values), statistics.median(values), p95, max(values)


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


@contextmanager
def service() -> Iterator[tuple[RunningStack, Settings]]:
    """Broker, a throw-away database and the whole service; all stopped and dropped afterwards."""
    broker = EmbeddedBroker(free_port()).start()
    with throwaway_database("avatar_bench", embedded_dir="bench-pg") as url:
        stack = start_stack(broker.bootstrap, url, free_port())
        try:
            yield stack, Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=url)
        finally:
            stop_stack(stack)
            broker.stop()



def gateway_rss_mb(stack: RunningStack) -> float:
    launcher = psutil.Process(stack.process.pid)
    for child in launcher.children(recursive=True):
        if "gateway.main" in " ".join(child.cmdline()):
            return float(child.memory_info().rss / 2**20)
    return float("nan")


def bench_rest(stack: RunningStack, runs: int, figures: Figures) -> None:
    figures.notes["gateway RSS before REST (MB)"] = round(gateway_rss_mb(stack), 1)
    with httpx.Client(timeout=60) as client:
        for run in range(runs):
            text = PERSIAN if run % 2 == 0 else ENGLISH
            started = time.perf_counter()
            response = client.post(f"{stack.http}/avatar/process", json={"text": text, "avatar_id": "sample"})
            total = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            video_s = int(response.headers["x-video-duration-ms"]) / 1000
            figures.add("REST: request → whole MP4", total)
            figures.add("REST: text accepted → first chunk (gateway)", float(response.headers["x-first-chunk-ms"]))
            figures.add("REST: ms of rendering per s of video", total / video_s)
    figures.notes["gateway RSS after REST (MB)"] = round(gateway_rss_mb(stack), 1)


def bench_rest_while_registering(stack: RunningStack, runs: int, figures: Figures) -> None:
    """REST's first chunk while 10 s 720p videos register one after another (registration runs in its own worker
    process, idle clips in the lip-sync worker: the gateway only stages uploads)."""
    from scripts.benchmark_registration import panning_clip

    clip = panning_clip()
    stop = threading.Event()
    registered: list[float] = []

    def keep_registering() -> None:
        with httpx.Client(base_url=stack.http, timeout=120) as uploads:
            while not stop.is_set():
                started = time.perf_counter()
                response = uploads.post("/avatar/register", data={"avatar_name": uuid.uuid4().hex, "user_id": "bench"},
                                        files={"file": ("pan.mp4", clip, "application/octet-stream")})
                if response.status_code == 201:
                    registered.append(time.perf_counter() - started)

    uploader = threading.Thread(target=keep_registering, daemon=True)
    uploader.start()
    try:
        time.sleep(1.0)  # the first upload is being analysed
        with httpx.Client(timeout=60) as client:
            for run in range(runs):
                response = client.post(f"{stack.http}/avatar/process",
                                       json={"text": PERSIAN if run % 2 == 0 else ENGLISH, "avatar_id": "sample"})
                response.raise_for_status()
                figures.add("REST: first chunk while a 10 s 720p video registers",
                            float(response.headers["x-first-chunk-ms"]))
                time.sleep(0.3)
    finally:
        stop.set()
        uploader.join(120)
    figures.notes["videos registered meanwhile"] = len(registered)


def bench_sdk(settings: Settings, runs: int, figures: Figures) -> None:
    producer = AvatarProducer(settings)
    producer.warm_up()
    for run in range(runs):
        marks: dict[str, float] = {}

        def on_sent(_request: TextRequest, marks: dict[str, float] = marks) -> None:
            marks["sent"] = time.perf_counter()

        def on_chunk(_chunk: Chunk, marks: dict[str, float] = marks) -> None:
            marks.setdefault("first", time.perf_counter())

        producer.say(avatar_id="sample", text=PERSIAN if run % 2 == 0 else ENGLISH, on_sent=on_sent,
                     on_chunk=on_chunk)
        done = time.perf_counter()
        figures.add("SDK: say() sent → first chunk", (marks["first"] - marks["sent"]) * 1000)
        figures.add("SDK: say() sent → whole MP4", (done - marks["sent"]) * 1000)
    producer.close()


def bench_cli(settings: Settings, runs: int, figures: Figures, workdir: Path) -> None:
    cli = str(Path(sys.executable).parent / "avatar-stream")
    for run in range(runs):
        started = time.perf_counter()
        done = subprocess.run([cli, "say", "-q", "--bootstrap", settings.kafka_bootstrap_servers, "--lang", "fa",
                               PERSIAN, "-o", str(workdir / f"cli-{run}.mp4")], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"avatar-stream failed: {done.stderr}")
        figures.add("CLI: avatar-stream say, wall time", (time.perf_counter() - started) * 1000)


PLAYER_RESULT = """() => [...window.avatarPlayer.requests.values()].map(r => ({
  state: r.state, firstChunkMs: r.firstChunkAt - r.sentAt, playStartMs: r.playStartAt - r.sentAt,
  minMarginS: r.minMarginS, end: r.end}))"""
HALT_WATCH = """() => new Promise(resolve => {
  const v = document.getElementById('video');
  const clicked = performance.now();
  let last = v.currentTime, still = 0, haltedAt = null;
  const step = () => {
    if (v.currentTime === last) { if (haltedAt === null) haltedAt = performance.now(); still += 1; }
    else { last = v.currentTime; still = 0; haltedAt = null; }
    if (still >= 10) {
      const confirmed = window.avatarPlayer.confirmedInterrupts.length ? window.confirmAt - clicked : null;
      resolve({haltMs: haltedAt - clicked, confirmMs: confirmed});
    } else requestAnimationFrame(step);
  };
  document.getElementById('interrupt').click();
  requestAnimationFrame(step);
})"""


def bench_player(stack: RunningStack, runs: int, figures: Figures) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(stack.http + "/")
        page.wait_for_function("window.avatarPlayer && window.avatarPlayer.connection.sessionId !== null")
        page.evaluate("""() => { window.stalls = 0; const p = window.avatarPlayer; const on = p.onMessage.bind(p);
          p.onMessage = m => { if (m.type === 'interrupted') window.confirmAt = performance.now(); on(m); };
          const v = document.getElementById('video');
          v.addEventListener('waiting', () => {  // only a wait inside a request that has started playing
            const mid = [...p.requests.values()].some(r => r.state === 'playing' && r.playStartAt !== null
                                                          && (r.end === null || v.currentTime < r.end - 0.1));
            if (mid) window.stalls += 1; }); }""")
        for run in range(runs):
            page.fill("#text", PERSIAN if run % 2 == 0 else ENGLISH)
            page.click("#send")
            page.wait_for_function(f"""() => {{ const all = [...window.avatarPlayer.requests.values()];
                                         return all.length === {run + 1} && all.every(r => r.state === 'done'); }}""",
                                   timeout=60_000)
        for result in page.evaluate(PLAYER_RESULT):
            figures.add("player: text sent → first chunk", result["firstChunkMs"])
            figures.add("player: text sent → first frame played", result["playStartMs"])
            if result["minMarginS"] is not None:
                figures.add("player: smallest chunk margin (ms ahead of playback)", result["minMarginS"] * 1000)
        figures.notes["player: late chunks"] = page.evaluate("window.avatarPlayer.stats.late")
        figures.notes["player: stalls during playback"] = page.evaluate("window.stalls")
        quality = page.evaluate("(() => { const q = document.getElementById('video').getVideoPlaybackQuality();"
                                " return [q.totalVideoFrames, q.droppedVideoFrames]; })()")
        figures.notes["player: frames decoded / dropped"] = f"{quality[0]} / {quality[1]}"
        for _ in range(max(1, runs // 2)):
            page.fill("#text", LONG_ENGLISH)
            page.click("#send")
            page.wait_for_function("document.getElementById('video').currentTime > "
                                   "[...window.avatarPlayer.requests.values()].at(-1).base + 0.5", timeout=30_000)
            halted = page.evaluate(HALT_WATCH)
            figures.add("player: interrupt click → playback halted", halted["haltMs"])
            if halted["confirmMs"] is not None:
                figures.add("player: interrupt click → server's `interrupted`", halted["confirmMs"])
            page.evaluate("window.avatarPlayer.confirmedInterrupts = []")
        browser.close()


def print_table(figures: Figures) -> None:
    width = max(len(name) for name in [*figures.series, *figures.notes]) + 2
    print(f"\n{'measure':<{width}}{'n':>4}{'p50':>10}{'p95':>10}{'max':>10}")
    print("-" * (width + 34))
    for name, count, p50, p95, top in figures.rows():
        print(f"{name:<{width}}{count:>4}{p50:>10.0f}{p95:>10.0f}{top:>10.0f}")
    for name, value in figures.notes.items():
        print(f"{name:<{width}}{value!s:>34}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per path (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 runs per path")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--skip", action="append", default=[], choices=["rest", "registering", "sdk", "cli", "player"])
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    figures = Figures()
    started = time.perf_counter()
    progress("starting broker, database and the service")
    with service() as (stack, settings):
        workdir = PROJECT_ROOT / ".data" / "bench-clients"
        workdir.mkdir(parents=True, exist_ok=True)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("rest", lambda: bench_rest(stack, runs, figures)),
            ("registering", lambda: bench_rest_while_registering(stack, runs, figures)),
            ("sdk", lambda: bench_sdk(settings, runs, figures)),
            ("cli", lambda: bench_cli(settings, runs, figures, workdir)),
            ("player", lambda: bench_player(stack, runs, figures)),
        ]
        for name, step in steps:
            if name not in args.skip:
                progress(f"{name}: {runs} runs")
                step()
    figures.notes["wall time of the benchmark (s)"] = round(time.perf_counter() - started, 1)
    print_table(figures)
    if args.output:
        args.output.write_text(json.dumps({"series": figures.series, "notes": figures.notes}, indent=2,
                                          ensure_ascii=False))


if __name__ == "__main__":
    main()
