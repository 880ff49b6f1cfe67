"""The load test's core, briefly against the shared stack (report shape, no stall), and its pure parts alone."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import pytest

from infra.settings import PROJECT_ROOT
from tests.integration.stack import RunningStack


def load_script() -> ModuleType:
    """scripts/ is not a package: import the script by path, as `python scripts/load_test.py` runs it."""
    spec = importlib.util.spec_from_file_location("load_test", PROJECT_ROOT / "scripts" / "load_test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


load_test = load_script()
progress_lines: list[str] = []
quiet = progress_lines.append  # progress lines are collected, not printed


# --- with the stack ----------------------------------------------------------------------------------------

@pytest.mark.integration
async def test_two_sessions_talk_in_real_time_and_every_figure_is_reported(stack: RunningStack) -> None:
    processes = load_test.discover_services(stack.port)
    assert {"tts", "lipsync", "gateway"} <= processes.keys(), "the stack's own processes, found from its port"
    plan = load_test.SessionPlan(url=stack.ws, language="en")
    config = load_test.RampConfig(start_sessions=2, max_sessions=2, step_s=9.0, max_duration_s=25.0,
                                  first_chunk_p95_budget_ms=0)  # stalls only: latency figures are the benchmark's
    report = await load_test.run_ramp(plan, config, load_test.ServiceMeter(processes), progress=quiet)

    [step] = report["steps"]
    assert step["sessions"] == 2 and step["requests"] >= 2 and step["chunks"] > step["requests"]
    assert step["stalls"] == 0 and step["failures"] == 0 and step["realtime"], (report["result"], step)
    assert step["max_lateness_ms"] <= 0, "every chunk arrived before the previous one finished playing"
    assert step["speech_s"] > 0
    assert step["first_chunk_ms"]["count"] == step["requests"] and 0 < step["first_chunk_ms"]["p50"] < 5000
    assert step["cpu_percent"]["total"] > 0 and set(step["cpu_percent"]["by_process"]) == set(processes)
    assert all(mb > 0 for mb in step["rss_mb"]["by_process"].values())
    result = report["result"]
    assert result["sessions_held_realtime"] == 2 and result["stopped_because"] == "max_sessions"
    assert result["first_stall"] is None and result["failures"] == []
    assert result["first_chunk_ms"]["p95"] >= result["first_chunk_ms"]["p50"]
    assert json.loads(json.dumps(report)) == report, "the report is plain JSON"
    assert "sessions held in real time: 2" in load_test.format_ramp(report)


@pytest.mark.integration
async def test_soak_samples_every_service_process_and_reports_growth_per_request(stack: RunningStack) -> None:
    processes = load_test.discover_services(stack.port)
    plan = load_test.SessionPlan(url=stack.ws, language="en")
    config = load_test.SoakConfig(sessions=1, minutes=0.12, sample_every_s=2.0, warm_up_s=0.0)
    report = await load_test.run_soak(plan, config, load_test.ServiceMeter(processes), progress=quiet)

    assert len(report["samples"]) >= 3 and report["result"]["requests"] >= 1
    assert set(report["growth"]) == set(processes)
    assert all(set(sample["rss_mb"]) == set(processes) for sample in report["samples"])
    assert report["result"]["stalls"] == 0 and report["result"]["failures"] == []
    assert "memory flat:" in load_test.format_soak(report)


# --- the pure parts ----------------------------------------------------------------------------------------

def test_chunks_ahead_of_playback_are_in_time_and_a_late_one_is_one_stall() -> None:
    clock = load_test.PlaybackClock()
    assert clock.arrive(0, 10.0) == 0  # playback starts with the first chunk
    assert clock.arrive(480, 10.3) == pytest.approx(-180)  # due at 10.48: in time
    assert clock.arrive(960, 11.1) == pytest.approx(140)  # due at 10.96: the video froze for 140 ms
    assert clock.stalls == 1
    assert clock.arrive(1440, 11.5) == pytest.approx(-80)  # playback resumed at 11.1: in time again
    assert clock.stalls == 1 and clock.playback_end_s(1920) == pytest.approx(12.06)


def test_tolerance_lets_small_lateness_pass() -> None:
    clock = load_test.PlaybackClock(tolerance_ms=50)
    clock.arrive(0, 0.0)
    clock.arrive(480, 0.52)
    assert clock.stalls == 0 and clock.max_lateness_ms == pytest.approx(40)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:5002/ws/stream", "ws://localhost:5002/ws/stream",
                                 "ws://[::1]:5002/ws/stream", "ws://127.8.9.10:80/ws/stream"])
def test_loopback_targets_are_accepted(url: str) -> None:
    assert load_test.require_loopback(url) == url


@pytest.mark.parametrize("url", ["ws://10.0.0.5:5002/ws/stream", "ws://192.168.1.2:5002/ws/stream",
                                 "ws://172.16.0.1/ws/stream", "ws://8.8.8.8/ws/stream", "http://127.0.0.1:5002/"])
def test_anything_but_loopback_is_refused_before_a_connection(url: str) -> None:
    with pytest.raises(load_test.LoadTestError):
        load_test.require_loopback(url)
    assert load_test.main(["--url", url, "--max-sessions", "1"]) == 2


def step_with(stalls: int = 0, failures: int = 0, requests: int = 4, p95: float | None = 300.0) -> dict[str, object]:
    return {"stalls": stalls, "failures": failures, "requests": requests, "first_chunk_ms": {"p95": p95}}


def test_a_step_is_real_time_without_stalls_failures_or_first_chunks_over_budget() -> None:
    budget = load_test.RampConfig(first_chunk_p95_budget_ms=1000)
    assert load_test.is_realtime(step_with(), budget)
    assert not load_test.is_realtime(step_with(stalls=1), budget)
    assert not load_test.is_realtime(step_with(failures=1), budget)
    assert not load_test.is_realtime(step_with(requests=0, p95=None), budget)
    assert not load_test.is_realtime(step_with(p95=1500.0), budget), "sentences queued: silent avatars"
    assert load_test.is_realtime(step_with(p95=1500.0), load_test.RampConfig(first_chunk_p95_budget_ms=0))


def test_bounds_are_enforced() -> None:
    with pytest.raises(load_test.LoadTestError):
        load_test.RampConfig(max_sessions=1000).check()
    with pytest.raises(load_test.LoadTestError):
        load_test.SoakConfig(minutes=24 * 60).check()
    budget = load_test.RequestBudget(2)
    assert [budget.take() for _ in range(3)] == [True, True, False]


def samples_with(rss_of: dict[str, list[float]]) -> list[dict[str, object]]:
    count = len(next(iter(rss_of.values())))
    return [{"t_s": 10.0 * i, "requests": 20 * i, "rss_mb": {name: rss[i] for name, rss in rss_of.items()}}
            for i in range(count)]


def test_memory_that_grows_with_requests_is_not_flat_but_noise_and_a_one_off_step_are() -> None:
    leaking = [500 + i * 20 * 100 / 1024 for i in range(10)]  # 100 KiB more per request
    noisy = [500.0, 503.0, 499.0, 502.0, 500.0, 501.0, 498.0, 502.0, 500.0, 501.0]
    step = [500.0] * 3 + [540.0] * 7  # an arena grown once, early
    growth = load_test.memory_growth(samples_with({"lipsync": leaking, "gateway": noisy, "tts": step,
                                                   "broker": leaking}), warm_up_s=0, flat_kib=16)
    assert growth["lipsync"]["kib_per_request"] == pytest.approx(100, rel=0.01) and growth["lipsync"]["flat"] is False
    assert growth["gateway"]["flat"] is True and abs(growth["gateway"]["kib_per_request"]) < 16
    assert growth["tts"]["flat"] is True and growth["tts"]["kib_per_request"] == 0
    assert growth["broker"]["flat"] is None, "the embedded broker's growth is the messages it holds"


def test_growth_within_the_runs_noise_is_reported_with_that_limit() -> None:
    slow_leak_in_noise = [500 + i * 20 * 20 / 1024 + (8 if i % 2 else -8) for i in range(10)]  # 20 KiB/request
    [growth] = load_test.memory_growth(samples_with({"gateway": slow_leak_in_noise}), warm_up_s=0,
                                       flat_kib=16).values()
    assert growth["detectable_kib_per_request"] > growth["kib_per_request"] > 16 and growth["flat"] is True


def test_percentiles_of_first_chunk_times() -> None:
    figures = load_test.percentiles([float(v) for v in range(1, 101)])
    assert figures["p50"] == pytest.approx(50.5) and figures["p95"] == pytest.approx(95.05, abs=0.1)
    assert figures["count"] == 100
    assert load_test.percentiles([])["p50"] is None
