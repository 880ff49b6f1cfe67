"""Measures what the whole stack costs while nobody uses it: CPU of every service and the embedded broker.

    python scripts/benchmark_idle_cpu.py                          # this checkout, ~1 minute
    python scripts/benchmark_idle_cpu.py --tree ../main-before    # another checkout's stack, for a before/after
    python scripts/benchmark_idle_cpu.py --seconds 60 --settle 30

It starts the stack as `make run` does (``python -m infra.launcher`` in the checkout, with its embedded broker,
a throw-away database (empty: the stack migrates it) and a data folder of its own), waits until ``/ready`` answers 200
and ``--settle`` seconds more (start-up work such as the sample avatar's idle clip is done), then reads the CPU
time of every process of the stack over ``--seconds`` and prints it per service, in % of one core.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from infra.broker import free_port
from infra.migrations import throwaway_database
from scripts import report_table

SERVICES = ("gateway.main", "processors.tts.main", "processors.lipsync.main", "processors.registration.main",
            "tansu", "infra.launcher")


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the stack exited with {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"/ready did not answer 200 within {timeout_s:.0f} s")


def service_of(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    return next((name for name in SERVICES if name in command), "other")


def cpu_by_service(root: psutil.Process, seconds: float) -> dict[str, float]:
    """% of one core per service over ``seconds`` (processes of a service summed)."""
    tree = [root, *root.children(recursive=True)]
    before = {p.pid: sum(p.cpu_times()[:2]) for p in tree}
    time.sleep(seconds)
    used: dict[str, float] = defaultdict(float)
    for process in tree:
        try:
            used[service_of(process)] += sum(process.cpu_times()[:2]) - before[process.pid]
        except psutil.NoSuchProcess:
            continue
    return {name: 100 * cpu / seconds for name, cpu in used.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose stack to start (default: this one)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of idling measured")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds waited after /ready first")
    args = parser.parse_args(argv)
    port = free_port()
    with throwaway_database("avatar_idle", migrated=False) as url, \
            tempfile.TemporaryDirectory(prefix="idle-cpu-") as data:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS="", EMBEDDED_KAFKA_PORT=str(free_port()), DATABASE_URL=url,
                   PORT=str(port), LOG_LEVEL="WARNING", DATA_DIR=data, PYTHONPATH=str(args.tree))
        print(f"starting the stack of {args.tree}", file=sys.stderr, flush=True)
        process = subprocess.Popen([sys.executable, "-m", "infra.launcher"], cwd=args.tree, env=env,
                                   start_new_session=True, stdout=subprocess.DEVNULL)
        try:
            wait_ready(port, process, 180)
            print(f"ready; settling {args.settle:g} s, then measuring {args.seconds:g} s", file=sys.stderr, flush=True)
            time.sleep(args.settle)
            usage = cpu_by_service(psutil.Process(process.pid), args.seconds)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    rows = [[name, f"{usage[name]:.1f}"] for name in (*SERVICES, "other") if name in usage]
    rows.append(["all", f"{sum(usage.values()):.1f}"])
    print(report_table.table(f"Idle stack CPU of {args.tree} (% of one core, over {args.seconds:g} s)",
                             ["service", "CPU %"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
