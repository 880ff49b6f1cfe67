"""Load and soak test over WebSocket: ramp talking sessions until the first stall, or hold some and watch memory.

Every session talks without pause, as an avatar on a kiosk would: it sends a sentence, receives every chunk of
it, and sends the next one when the previous has finished playing. A chunk that arrives after the previous
one finished playing (from ``pts_ms``/``duration_ms``, with playback starting when the first chunk arrives)
is a stall: the viewer would see the video freeze.

    python scripts/load_test.py --start                        # start a stack, ramp 1, 2, 3 ... sessions
    python scripts/load_test.py --url ws://127.0.0.1:5002/ws/stream --max-sessions 8 --output report.json
    python scripts/load_test.py --start --soak 5 --sessions 2  # memory of every service process each 10 s

Loopback targets only, and every run is bounded in sessions, requests and time (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import socket
import statistics
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

import psutil
import websockets

TEXTS = {
    "fa": ["سلام، حال شما چطور است؟ امروز هوا خیلی خوب است و ما می‌خواهیم کمی با هم صحبت کنیم.",
           "این یک آزمون بار است. هر جلسه بدون توقف صحبت می‌کند تا ببینیم سرویس چند جلسه را هم‌زمان نگه می‌دارد.",
           "کتاب خواندن یکی از بهترین عادت‌هاست. هر روز چند صفحه بخوانید و از آن لذت ببرید."],
    "en": ["Hello there, how are you today? The weather is lovely and we would like to talk for a while.",
           "This is a load test. Every session keeps talking so that we can see how many the service holds.",
           "Reading is one of the best habits. Read a few pages every day and enjoy every one of them."],
}
HARD_MAX_SESSIONS = 64
HARD_MAX_MINUTES = 60
MB = 1024 * 1024


class LoadTestError(Exception):
    """A run that must not start (a non-loopback target, impossible bounds) or cannot go on."""


# --- what a viewer sees -----------------------------------------------------------------------------------

def require_loopback(url: str) -> str:
    """The URL, if it points at this machine; load is never sent anywhere else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise LoadTestError(f"{url!r} is not a ws:// or wss:// URL")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except socket.gaierror as error:
        raise LoadTestError(f"cannot resolve {parts.hostname!r}: {error}") from None
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if outside:
        raise LoadTestError(f"refusing {url}: {parts.hostname} is not a loopback address ({', '.join(outside)}); "
                            "the load test only targets 127.0.0.0/8 or ::1")
    return url


@dataclass
class PlaybackClock:
    """A player of one request's chunks: starts at the first chunk, plays them back to back, waits if starved.

    ``arrive`` returns how late a chunk is (ms; ≤ 0 is in time). After a stall the player resumes from the
    late chunk, so one slow stretch counts once, not once per chunk after it.
    """

    tolerance_ms: float = 0.0
    origin_s: float | None = None  # wall time at which pts ``origin_pts_ms`` plays
    origin_pts_ms: int = 0
    stalls: int = 0
    max_lateness_ms: float = -math.inf

    def arrive(self, pts_ms: int, arrived_s: float) -> float:
        if self.origin_s is None:
            self.origin_s, self.origin_pts_ms = arrived_s, pts_ms
            return 0.0
        due_s = self.origin_s + (pts_ms - self.origin_pts_ms) / 1000
        lateness_ms = (arrived_s - due_s) * 1000
        self.max_lateness_ms = max(self.max_lateness_ms, lateness_ms)
        if lateness_ms > self.tolerance_ms:
            self.stalls += 1
            self.origin_s, self.origin_pts_ms = arrived_s, pts_ms
        return lateness_ms

    def playback_end_s(self, end_pts_ms: int) -> float:
        assert self.origin_s is not None
        return self.origin_s + (end_pts_ms - self.origin_pts_ms) / 1000


@dataclass
class Stall:
    session: int
    request_id: str
    seq: int
    late_by_ms: float
    at_s: float  # since the run started


@dataclass
class RequestResult:
    session: int
    request_id: str
    sent_s: float
    finished_s: float
    first_chunk_ms: float | None
    chunks: int
    speech_s: float
    stalls: int
    max_lateness_ms: float
    error: str | None = None


@dataclass
class Recorder:
    """Everything the sessions observed, in the order it happened (times on the monotonic clock)."""

    started_s: float = field(default_factory=time.monotonic)
    results: list[RequestResult] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    first_stall: asyncio.Event = field(default_factory=asyncio.Event)

    def stall(self, stall: Stall) -> None:
        self.stalls.append(stall)
        self.first_stall.set()

    def fail(self, message: str) -> None:
        self.failures.append(message)
        self.first_stall.set()  # a request that never finishes is worse than a late chunk

    def finished_between(self, start_s: float, end_s: float) -> list[RequestResult]:
        return [r for r in self.results if start_s <= r.finished_s < end_s]


@dataclass(frozen=True)
class SessionPlan:
    url: str
    language: str = "fa"
    avatar_id: str = "sample"
    token: str | None = None
    tolerance_ms: float = 0.0
    request_timeout_s: float = 60.0
    pace: bool = True  # wait for playback to end before the next sentence, as a viewer would


async def talk(index: int, plan: SessionPlan, recorder: Recorder, budget: RequestBudget) -> None:
    """One session speaking continuously until cancelled or out of budget."""
    headers = {"Authorization": f"Bearer {plan.token}"} if plan.token else None
    async with websockets.connect(plan.url, max_size=64 * MB, additional_headers=headers, open_timeout=15) as ws:
        await _select_avatar(ws, plan.avatar_id)
        texts = TEXTS[plan.language]
        turn = index  # sessions start on different sentences
        while budget.take():
            result, playback_end_s = await _say(ws, index, texts[turn % len(texts)], plan, recorder)
            turn += 1
            recorder.results.append(result)
            if result.error:
                recorder.fail(f"session {index}: {result.error}")
                return
            if plan.pace:
                await asyncio.sleep(max(0.0, playback_end_s - time.monotonic()))


async def _select_avatar(ws: websockets.ClientConnection, avatar_id: str) -> None:
    await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": avatar_id}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 15))
    if reply.get("type") != "session_ready":
        raise LoadTestError(f"the gateway refused the session: {reply}")


async def _say(ws: websockets.ClientConnection, index: int, text: str, plan: SessionPlan,
               recorder: Recorder) -> tuple[RequestResult, float]:
    """Send one sentence and play its chunks as they come; returns the result and when playback ends."""
    clock = PlaybackClock(plan.tolerance_ms)
    sent_s = time.monotonic()
    await ws.send(json.dumps({"type": "text_input", "text": text, "language": plan.language}, ensure_ascii=False))
    request_id, first_chunk_ms, chunks, first_pts_ms, end_pts_ms, error = "", None, 0, 0, 0, None
    try:
        async with asyncio.timeout(plan.request_timeout_s):
            while True:
                message = json.loads(await ws.recv())
                arrived_s = time.monotonic()
                kind = message.get("type")
                if kind == "request_accepted":
                    request_id = message["request_id"]
                elif kind == "error":
                    error = f"{message.get('code')}: {message.get('message')}"
                    break
                elif kind == "video_chunk" and message.get("request_id") == request_id:
                    if not chunks:
                        first_chunk_ms, first_pts_ms = (arrived_s - sent_s) * 1000, message["pts_ms"]
                    chunks += 1
                    lateness_ms = clock.arrive(message["pts_ms"], arrived_s)
                    if lateness_ms > plan.tolerance_ms:
                        recorder.stall(Stall(index, request_id, message["seq"], round(lateness_ms, 1),
                                             round(arrived_s - recorder.started_s, 2)))
                    end_pts_ms = message["pts_ms"] + message["duration_ms"]
                    if message["is_last"]:
                        break
    except TimeoutError:
        error = f"no last chunk within {plan.request_timeout_s:.0f} s ({chunks} chunks received)"
    playback_end_s = clock.playback_end_s(end_pts_ms) if clock.origin_s is not None else time.monotonic()
    result = RequestResult(index, request_id, sent_s, time.monotonic(), first_chunk_ms, chunks,
                           (end_pts_ms - first_pts_ms) / 1000, clock.stalls,
                           round(clock.max_lateness_ms, 1) if chunks > 1 else 0.0, error)
    return result, playback_end_s


@dataclass
class RequestBudget:
    """The run's bound on requests, shared by every session."""

    remaining: int

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


# --- the service processes ---------------------------------------------------------------------------------

SERVICE_NAMES = {"processors.tts.main": "tts", "processors.lipsync.main": "lipsync", "gateway.main": "gateway",
                 "infra.launcher": "launcher", "tansu": "broker"}


# Listed, but left out of the totals and the memory verdict: the embedded broker of --start stands in for
# Apache Kafka (a cluster of its own in production) and, memory-only, holds every message sent.
STORAGE_PROCESSES = {"broker"}


def service_name(process: psutil.Process) -> str:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return f"pid{process.pid}"
    return next((name for marker, name in SERVICE_NAMES.items() if marker in command), process.name())


def listening_process(port: int) -> psutil.Process:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            if connection.pid is None:
                break
            return psutil.Process(connection.pid)
    raise LoadTestError(f"no process of this machine listens on port {port} (or it is not visible to this user)")


def discover_services(port: int) -> dict[str, psutil.Process]:
    """The gateway on ``port`` and, if infra.launcher started it, its sibling processors (not other stacks)."""
    gateway = listening_process(port)
    parent = gateway.parent()
    if parent is not None and service_name(parent) == "launcher":
        return named_processes(parent.children())
    return {"gateway": gateway}


def named_processes(processes: list[psutil.Process]) -> dict[str, psutil.Process]:
    """Each process under its service's name; several of one service (LIPSYNC_WORKERS) as lipsync, lipsync-2, …"""
    named: dict[str, psutil.Process] = {}
    for process in processes:
        name = base = service_name(process)
        number = 1
        while name in named:
            number += 1
            name = f"{base}-{number}"
        named[name] = process
    return named


@dataclass(frozen=True)
class Usage:
    cpu_s: dict[str, float]
    rss: dict[str, int]
    at_s: float


class ServiceMeter:
    """CPU seconds (own + reaped children, e.g. espeak-ng) and RSS of each service process."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        if not processes:
            raise LoadTestError("no service process to measure")
        self.processes = processes

    def sample(self) -> Usage:
        cpu, rss = {}, {}
        for name, process in self.processes.items():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    cpu[name] = times.user + times.system + times.children_user + times.children_system
                    rss[name] = process.memory_info().rss
            except psutil.Error:
                cpu[name], rss[name] = math.nan, 0
        return Usage(cpu, rss, time.monotonic())

    @staticmethod
    def cpu_percent(before: Usage, after: Usage) -> dict[str, float]:
        wall = max(1e-6, after.at_s - before.at_s)
        return {name: round(100 * (after.cpu_s[name] - before.cpu_s[name]) / wall, 1) for name in after.cpu_s}


# --- ramp ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RampConfig:
    start_sessions: int = 1
    max_sessions: int = 12
    step_sessions: int = 1
    step_s: float = 20.0
    max_duration_s: float = 600.0
    max_requests: int = 5000
    # Past this, sentences wait in queues: no chunk is late, but the avatar stands silent between sentences.
    first_chunk_p95_budget_ms: float = 1000.0  # 0: stalls alone end the ramp

    def check(self) -> None:
        if not 1 <= self.start_sessions <= self.max_sessions <= HARD_MAX_SESSIONS:
            raise LoadTestError(f"sessions must satisfy 1 ≤ start ≤ max ≤ {HARD_MAX_SESSIONS}")
        if self.step_sessions < 1 or self.step_s <= 0 or not 0 < self.max_duration_s <= HARD_MAX_MINUTES * 60:
            raise LoadTestError(f"need step ≥ 1 session, step time > 0 and a duration ≤ {HARD_MAX_MINUTES} min")


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    if len(values) == 1:
        return {"p50": round(values[0], 1), "p95": round(values[0], 1), "p99": round(values[0], 1), "count": 1}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1), "count": len(values)}


def step_report(sessions: int, results: list[RequestResult], stalls: list[Stall], failures: int, before: Usage,
                after: Usage, baseline: Usage) -> dict[str, Any]:
    cpu = ServiceMeter.cpu_percent(before, after)
    cpu_total = sum(value for name, value in cpu.items() if name not in STORAGE_PROCESSES)
    rss_total = sum(value for name, value in after.rss.items() if name not in STORAGE_PROCESSES)
    rss_baseline = sum(value for name, value in baseline.rss.items() if name not in STORAGE_PROCESSES)
    return {
        "sessions": sessions,
        "seconds": round(after.at_s - before.at_s, 1),
        "requests": len(results),
        "chunks": sum(r.chunks for r in results),
        "speech_s": round(sum(r.speech_s for r in results), 1),
        "stalls": len(stalls),
        "failures": failures,
        "max_lateness_ms": max([r.max_lateness_ms for r in results] + [stall.late_by_ms for stall in stalls],
                               default=0.0),
        "first_chunk_ms": percentiles([r.first_chunk_ms for r in results if r.first_chunk_ms is not None]),
        "cpu_percent": {"total": round(cpu_total, 1), "per_session": round(cpu_total / sessions, 1),
                        "by_process": cpu},
        "rss_mb": {"total": round(rss_total / MB, 1),
                   "per_session": round((rss_total - rss_baseline) / MB / sessions, 1),
                   "by_process": {name: round(value / MB, 1) for name, value in after.rss.items()}},
    }


Progress = Callable[[str], None]


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_ramp(plan: SessionPlan, config: RampConfig, meter: ServiceMeter,
                   progress: Progress = _print_progress) -> dict[str, Any]:
    """Add sessions step by step until a stall (or a failed request), the session cap or the time limit."""
    config.check()
    require_loopback(plan.url)
    recorder, budget = Recorder(), RequestBudget(config.max_requests)
    deadline = recorder.started_s + config.max_duration_s
    baseline = meter.sample()
    tasks: list[asyncio.Task[None]] = []
    steps: list[dict[str, Any]] = []
    stopped_because = "max_sessions"
    try:
        for sessions in range(config.start_sessions, config.max_sessions + 1, config.step_sessions):
            _add_sessions(tasks, sessions, plan, recorder, budget)
            before, stalls_before, failures_before = meter.sample(), len(recorder.stalls), len(recorder.failures)
            await _wait_for_step(recorder, min(config.step_s, deadline - time.monotonic()))
            after = meter.sample()
            step = step_report(sessions, recorder.finished_between(before.at_s, after.at_s),
                               recorder.stalls[stalls_before:], len(recorder.failures) - failures_before,
                               before, after, baseline)
            step["realtime"] = is_realtime(step, config)
            steps.append(step)
            progress(_step_line(step))
            stopped_because = _stop_reason(recorder, budget, deadline, step) or stopped_because
            if stopped_because != "max_sessions":
                break
    finally:
        await _cancel(tasks)
    return _ramp_report(plan, config, steps, recorder, baseline, stopped_because)


def _add_sessions(tasks: list[asyncio.Task[None]], target: int, plan: SessionPlan, recorder: Recorder,
                  budget: RequestBudget) -> None:
    while len(tasks) < target:
        tasks.append(asyncio.create_task(_guarded(talk(len(tasks), plan, recorder, budget), len(tasks), recorder)))


async def _guarded(session: Awaitable[None], index: int, recorder: Recorder) -> None:
    """A session that cannot connect or is refused ends the ramp with its reason, not with a traceback."""
    try:
        await session
    except (OSError, LoadTestError, websockets.WebSocketException, TimeoutError) as error:
        recorder.fail(f"session {index}: {type(error).__name__}: {error}")


async def _wait_for_step(recorder: Recorder, seconds: float) -> None:
    """Sleep out the step, but wake at once on the first stall or failure."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.first_stall.wait(), max(0.0, seconds))


def is_realtime(step: dict[str, Any], config: RampConfig) -> bool:
    """Every session kept up: nothing stalled or failed, and first chunks came within the budget."""
    p95 = step["first_chunk_ms"]["p95"]
    in_budget = not config.first_chunk_p95_budget_ms or (p95 is not None and p95 <= config.first_chunk_p95_budget_ms)
    return step["stalls"] == 0 and step["failures"] == 0 and step["requests"] > 0 and in_budget


def _stop_reason(recorder: Recorder, budget: RequestBudget, deadline: float, step: dict[str, Any]) -> str | None:
    if recorder.failures:
        return "failure"
    if recorder.stalls:
        return "stall"
    if not step["realtime"]:
        return "first_chunk_latency"
    if budget.remaining <= 0:
        return "max_requests"
    if time.monotonic() >= deadline:
        return "time_limit"
    return None


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _ramp_report(plan: SessionPlan, config: RampConfig, steps: list[dict[str, Any]], recorder: Recorder,
                 baseline: Usage, stopped_because: str) -> dict[str, Any]:
    held = max((s["sessions"] for s in steps if s["realtime"]), default=0)  # the ramp stops at the first other
    reference = next((s for s in steps if s["sessions"] == held), None)
    first_chunks = [r.first_chunk_ms for r in recorder.results if r.first_chunk_ms is not None]
    return {
        "mode": "ramp",
        "target": plan.url,
        "machine": machine(),
        "config": asdict(config) | {"language": plan.language, "tolerance_ms": plan.tolerance_ms,
                                     "paced": plan.pace},
        "baseline_rss_mb": {name: round(value / MB, 1) for name, value in baseline.rss.items()},
        "steps": steps,
        "result": {
            "sessions_held_realtime": held,
            "stopped_because": stopped_because,
            "first_stall": asdict(recorder.stalls[0]) if recorder.stalls else None,
            "stalls_by_seq": stalls_by_seq(recorder.stalls),
            "failures": recorder.failures[:5],
            "requests": len(recorder.results),
            "first_chunk_ms": percentiles(first_chunks),
            "cpu_percent_per_session": reference["cpu_percent"]["per_session"] if reference else None,
            "rss_mb_per_session": reference["rss_mb"]["per_session"] if reference else None,
        },
    }


def stalls_by_seq(stalls: list[Stall]) -> dict[str, int]:
    """Which chunk of a request came late: seq 1 means the first chunk's playback was too short to cover
    rendering and delivering the second."""
    return {str(seq): count for seq, count in sorted(Counter(stall.seq for stall in stalls).items())}


def machine() -> dict[str, Any]:
    """The machine, and how busy it was anyway (other work on it skews every figure)."""
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
            "load_average_1_5_15m": [round(load, 2) for load in os.getloadavg()]}


def _step_line(step: dict[str, Any]) -> str:
    first = step["first_chunk_ms"]
    return (f"  {step['sessions']:>3} sessions  {step['requests']:>4} requests  {step['stalls']} stalls  "
            f"first chunk p50 {first['p50']} ms p95 {first['p95']} ms  CPU {step['cpu_percent']['total']}%  "
            f"RSS {step['rss_mb']['total']} MB")


# --- soak ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SoakConfig:
    sessions: int = 2
    minutes: float = 5.0
    sample_every_s: float = 10.0
    warm_up_s: float = 60.0  # caches, arenas and the first requests settle before the baseline
    max_requests: int = 20_000
    flat_kib_per_request: float = 16.0  # above this per process, memory grows with the work done

    def check(self) -> None:
        if not 1 <= self.sessions <= HARD_MAX_SESSIONS or not 0 < self.minutes <= HARD_MAX_MINUTES:
            raise LoadTestError(f"a soak holds 1–{HARD_MAX_SESSIONS} sessions for at most {HARD_MAX_MINUTES} min")


async def run_soak(plan: SessionPlan, config: SoakConfig, meter: ServiceMeter,
                   progress: Progress = _print_progress) -> dict[str, Any]:
    """Hold a fixed number of sessions, sampling every service's RSS; memory must not grow per request."""
    config.check()
    require_loopback(plan.url)
    recorder, budget = Recorder(), RequestBudget(config.max_requests)
    tasks: list[asyncio.Task[None]] = []
    _add_sessions(tasks, config.sessions, plan, recorder, budget)
    samples: list[dict[str, Any]] = []
    end_s = recorder.started_s + config.minutes * 60
    try:
        while time.monotonic() < end_s and not recorder.failures:
            await asyncio.sleep(min(config.sample_every_s, max(0.0, end_s - time.monotonic())))
            usage = meter.sample()
            samples.append({"t_s": round(usage.at_s - recorder.started_s, 1), "requests": len(recorder.results),
                            "rss_mb": {name: round(value / MB, 2) for name, value in usage.rss.items()}})
            progress(_soak_line(samples[-1], len(recorder.stalls)))
    finally:
        await _cancel(tasks)
    return _soak_report(plan, config, samples, recorder)


def robust_slope(xs: list[float], ys: list[float]) -> float:
    """Theil–Sen: the median of the slopes between every two samples. A one-off step (an allocator arena
    growing once) moves few of them; a leak moves all of them."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    return statistics.median(slopes) if slopes else 0.0


def memory_growth(samples: list[dict[str, Any]], warm_up_s: float, flat_kib: float) -> dict[str, Any]:
    """Per process: RSS after warm-up vs at the end, its growth per request completed, and the smallest growth
    per request this run could tell from allocator noise (the spread around the trend over the requests done).
    Memory is flat when the growth is within ``flat_kib`` or within that noise."""
    settled = [s for s in samples if s["t_s"] >= warm_up_s] or samples[-1:]
    growth: dict[str, Any] = {}
    for name in settled[0]["rss_mb"] if settled else []:
        requests = [float(s["requests"]) for s in settled]
        rss = [s["rss_mb"][name] for s in settled]
        slope = robust_slope(requests, rss)  # MB per request
        residuals = sorted(y - slope * x for x, y in zip(requests, rss, strict=True))
        noise_mb = residuals[-1] - residuals[0]
        detectable_kib = 1024 * noise_mb / max(1.0, requests[-1] - requests[0])
        kib_per_request = 1024 * slope
        growth[name] = {"start_mb": rss[0], "end_mb": rss[-1], "growth_mb": round(rss[-1] - rss[0], 2),
                        "peak_mb": max(rss), "kib_per_request": round(kib_per_request, 2),
                        "detectable_kib_per_request": round(detectable_kib, 2),
                        "flat": None if name in STORAGE_PROCESSES
                        else kib_per_request <= max(flat_kib, detectable_kib)}
    return growth


def _soak_report(plan: SessionPlan, config: SoakConfig, samples: list[dict[str, Any]],
                 recorder: Recorder) -> dict[str, Any]:
    growth = memory_growth(samples, config.warm_up_s, config.flat_kib_per_request)
    settled_requests = [s["requests"] for s in samples if s["t_s"] >= config.warm_up_s]
    decidable = len(settled_requests) >= 3 and settled_requests[-1] - settled_requests[0] >= 10
    return {
        "mode": "soak",
        "target": plan.url,
        "machine": machine(),
        "config": asdict(config) | {"language": plan.language, "tolerance_ms": plan.tolerance_ms},
        "samples": samples,
        "growth": growth,
        "result": {
            "flat": None if not decidable else all(item["flat"] is not False for item in growth.values())
            and not recorder.failures,
            "requests": len(recorder.results),
            "requests_after_warm_up": settled_requests[-1] - settled_requests[0] if settled_requests else 0,
            "stalls": len(recorder.stalls),
            "stalls_by_seq": stalls_by_seq(recorder.stalls),
            "failures": recorder.failures[:5],
            "first_chunk_ms": percentiles([r.first_chunk_ms for r in recorder.results
                                           if r.first_chunk_ms is not None]),
        },
    }


def _soak_line(sample: dict[str, Any], stalls: int) -> str:
    rss = "  ".join(f"{name} {mb:.1f}" for name, mb in sample["rss_mb"].items())
    return f"  t={sample['t_s']:>6.0f} s  {sample['requests']:>5} requests  {stalls} stalls  RSS MB: {rss}"


# --- tables ----------------------------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_ramp(report: dict[str, Any]) -> str:
    names = list(report["steps"][0]["cpu_percent"]["by_process"]) if report["steps"] else []
    rows = [[s["sessions"], s["requests"], s["stalls"], s["max_lateness_ms"], s["first_chunk_ms"]["p50"],
             s["first_chunk_ms"]["p95"], s["first_chunk_ms"]["p99"], s["cpu_percent"]["total"],
             s["cpu_percent"]["per_session"], *(s["cpu_percent"]["by_process"].get(n) for n in names),
             s["rss_mb"]["total"], s["rss_mb"]["per_session"]]
            for s in report["steps"]]
    result = report["result"]
    first = result["first_chunk_ms"]
    return "\n".join([
        table(["sessions", "requests", "stalls", "max late ms", "first p50 ms", "p95 ms", "p99 ms", "CPU %",
               "CPU %/session", *(f"{n} %" for n in names), "RSS MB", "RSS MB/session"], rows),
        "(CPU: 100% = one core; CPU % and RSS are the services', without the broker)"
        if STORAGE_PROCESSES & set(names) else "(CPU: 100% = one core)",
        "",
        f"sessions held in real time: {result['sessions_held_realtime']}   (stopped: {result['stopped_because']})",
        f"first chunk over the run:   p50 {first['p50']} ms   p95 {first['p95']} ms   p99 {first['p99']} ms"
        f"   ({first['count']} requests)",
        f"per session at that load:   CPU {result['cpu_percent_per_session']}% of a core   "
        f"RSS +{result['rss_mb_per_session']} MB",
        f"first stall:                {result['first_stall'] or 'none'}",
        f"stalls by chunk seq:        {result['stalls_by_seq'] or 'none'}",
        *(f"failure: {failure}" for failure in result["failures"]),
    ])


def format_soak(report: dict[str, Any]) -> str:
    verdicts = {True: "yes", False: "NO", None: "n/a (holds the messages)"}
    rows = [[name, g["start_mb"], g["end_mb"], g["peak_mb"], g["growth_mb"], g["kib_per_request"],
             g["detectable_kib_per_request"], verdicts[g["flat"]]] for name, g in report["growth"].items()]
    result = report["result"]
    return "\n".join([
        table(["process", "RSS after warm-up MB", "RSS at end MB", "peak MB", "growth MB", "KiB/request",
               "noise KiB/request", "flat"], rows),
        "",
        f"{report['config']['sessions']} sessions for {report['config']['minutes']} min: {result['requests']} "
        f"requests ({result['requests_after_warm_up']} after warm-up), {result['stalls']} stalls "
        f"(by chunk seq: {result['stalls_by_seq'] or 'none'}), "
        f"first chunk p50 {result['first_chunk_ms']['p50']} ms p95 {result['first_chunk_ms']['p95']} ms",
        f"memory flat: {verdicts[result['flat']] if result['flat'] is not None else 'undecided: too few samples'} "
        f"(growth per request ≤ "
        f"{report['config']['flat_kib_per_request']} KiB, or within the allocator noise of this run, per process)",
        *(f"failure: {failure}" for failure in result["failures"]),
    ])


# --- a stack of our own (--start) ----------------------------------------------------------------------

@contextlib.contextmanager
def own_stack() -> Iterator[tuple[str, dict[str, psutil.Process]]]:
    """An embedded broker, a scratch database and the whole service, as the tests start them; removed after."""
    from infra.broker import EmbeddedBroker, free_port
    from infra.migrations import throwaway_database
    from tests.integration.stack import start_stack, stop_stack

    broker = EmbeddedBroker(free_port()).start()
    try:
        with throwaway_database("avatar_load", embedded_dir="load-pg") as url:
            _print_progress(f"starting a stack (broker {broker.bootstrap}, database {url.rsplit('/', 1)[-1]}) …")
            stack = start_stack(broker.bootstrap, url, free_port())
            try:
                processes = named_processes(psutil.Process(stack.process.pid).children())
                if broker.process is not None:
                    processes["broker"] = psutil.Process(broker.process.pid)
                yield stack.ws, processes
            finally:
                stop_stack(stack)
    finally:
        broker.stop()


# --- command line ----------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", default="ws://127.0.0.1:5002/ws/stream", help="a running gateway (loopback only)")
    target.add_argument("--start", action="store_true", help="start a stack of our own and remove it afterwards")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="hold --sessions sessions this long instead")
    parser.add_argument("--sessions", type=int, default=2, help="sessions held by --soak")
    parser.add_argument("--start-sessions", type=int, default=1)
    parser.add_argument("--max-sessions", type=int, default=12)
    parser.add_argument("--step", type=int, default=1, help="sessions added per step")
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the ramp's time limit")
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--language", choices=sorted(TEXTS), default="fa")
    parser.add_argument("--avatar", default="sample")
    parser.add_argument("--token", help="admin or user token when the gateway runs with DEV_MODE=false")
    parser.add_argument("--tolerance-ms", type=float, default=0.0, help="lateness that still is no stall")
    parser.add_argument("--first-chunk-budget-ms", type=float, default=1000.0,
                        help="a step whose first-chunk p95 exceeds this is not real time (0: no budget)")
    parser.add_argument("--greedy", action="store_true", help="send the next sentence at once, not after playback")
    parser.add_argument("--output", type=Path, help="write the report as JSON here")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, url: str, processes: dict[str, psutil.Process]) -> dict[str, Any]:
    plan = SessionPlan(url=url, language=args.language, avatar_id=args.avatar, token=args.token,
                       tolerance_ms=args.tolerance_ms, pace=not args.greedy)
    meter = ServiceMeter(processes)
    _print_progress(f"measuring {', '.join(f'{n} (pid {p.pid})' for n, p in processes.items())}")
    if args.soak:
        return await run_soak(plan, SoakConfig(sessions=args.sessions, minutes=args.soak), meter)
    config = RampConfig(start_sessions=args.start_sessions, max_sessions=args.max_sessions, step_sessions=args.step,
                        step_s=args.step_seconds, max_duration_s=args.max_seconds, max_requests=args.max_requests,
                        first_chunk_p95_budget_ms=args.first_chunk_budget_ms)
    return await run_ramp(plan, config, meter)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.start:
            with own_stack() as (url, processes):
                report = asyncio.run(_run(args, url, processes))
        else:
            url = require_loopback(args.url)
            port = urllib.parse.urlsplit(url).port or 80
            report = asyncio.run(_run(args, url, discover_services(port)))
    except LoadTestError as error:
        print(f"load test: {error}", file=sys.stderr)
        return 2
    print(format_soak(report) if report["mode"] == "soak" else format_ramp(report))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
