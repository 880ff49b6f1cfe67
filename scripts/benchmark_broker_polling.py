"""Measures what a consumer's fetch wait costs: the broker's CPU while every consumer idles, and one hop's latency.

    python scripts/benchmark_broker_polling.py                      # the embedded broker, waits 10..500 ms
    python scripts/benchmark_broker_polling.py --waits 10 50 --consumers 12 --idle-s 10
    python scripts/benchmark_broker_polling.py --bootstrap kafka:9092 # an existing cluster (its CPU is not read)

For each ``fetch.wait.max.ms`` it starts ``--consumers`` consumers (about what an idle stack runs: the gateway's
session and status readers, every processor's group consumer and control listener), each on its own empty topic,
lets them idle for ``--idle-s`` seconds while sampling the broker process's CPU, then sends ``--messages``
messages one at a time to one of them and times produce → consume (one Kafka hop). ``KAFKA_FETCH_WAIT_MS``
defaults from this: the embedded broker (Tansu) answers a fetch only at the end of its wait, so the wait is the
hop's latency; Apache Kafka answers as soon as data arrives, so there the wait costs nothing (docs/design.md).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from infra.broker import EmbeddedBroker, free_port
from scripts import report_table

DEFAULT_WAITS = (10, 25, 50, 100, 500)


@dataclass(frozen=True)
class PollingCost:
    wait_ms: int
    broker_cpu_percent: float | None  # of one core, while every consumer idles; None for an external broker
    clients_cpu_percent: float  # this process (the consumers' librdkafka threads), same window
    hop_p50_ms: float
    hop_p95_ms: float


def _topics(admin: AdminClient, names: list[str]) -> None:
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in names]).values():
        future.result(10)


def _consumer(bootstrap: str, wait_ms: int, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "poll-benchmark", "fetch.wait.max.ms": wait_ms,
                         "enable.auto.commit": False, "auto.offset.reset": "latest", "log_level": 3})
    consumer.assign([TopicPartition(topic, 0)])
    return consumer


def _idle(consumers: list[Consumer], seconds: float, broker: psutil.Process | None) -> tuple[float | None, float]:
    """CPU % of one core of the broker and of this process while ``consumers`` poll empty topics."""
    stop = threading.Event()

    def poll(consumer: Consumer) -> None:
        while not stop.is_set():
            consumer.poll(0.1)

    threads = [threading.Thread(target=poll, args=(c,), daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    time.sleep(min(2.0, seconds / 2))  # connections made, first fetches answered
    me = psutil.Process()
    broker_before = sum(broker.cpu_times()[:2]) if broker else 0.0
    mine_before, started = sum(me.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    broker_cpu = (sum(broker.cpu_times()[:2]) - broker_before) / elapsed * 100 if broker else None
    mine = (sum(me.cpu_times()[:2]) - mine_before) / elapsed * 100
    stop.set()
    for thread in threads:
        thread.join()
    return broker_cpu, mine


def _hops(bootstrap: str, consumer: Consumer, topic: str, count: int) -> list[float]:
    """Produce → consume latency of ``count`` messages sent one at a time, in ms."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "log_level": 3})
    latencies = []
    for _ in range(count + 2):
        sent = time.perf_counter()
        producer.produce(topic, b"x")
        producer.flush(5)
        while (message := consumer.poll(5.0)) is None or message.error():
            if time.perf_counter() - sent > 5:
                raise RuntimeError(f"no message back on {topic} within 5 s")
        latencies.append((time.perf_counter() - sent) * 1000)
        time.sleep(random.uniform(0.01, 0.15))  # at a random phase of the consumer's fetch rhythm
    return latencies[2:]  # the first ones pay for the connection


def measure(bootstrap: str, broker: psutil.Process | None, wait_ms: int, consumers: int, idle_s: float,
            messages: int) -> PollingCost:
    run = uuid.uuid4().hex[:8]
    names = [f"poll-benchmark.{run}.{wait_ms}.{index}" for index in range(consumers)]
    _topics(AdminClient({"bootstrap.servers": bootstrap}), names)
    readers = [_consumer(bootstrap, wait_ms, name) for name in names]
    try:
        broker_cpu, clients_cpu = _idle(readers, idle_s, broker)
        hops = _hops(bootstrap, readers[0], names[0], messages)
    finally:
        for reader in readers:
            reader.close()
    ordered = sorted(hops)
    return PollingCost(wait_ms, broker_cpu, clients_cpu, statistics.median(hops),
                       ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, nargs="+", default=list(DEFAULT_WAITS), help="fetch waits in ms")
    parser.add_argument("--consumers", type=int, default=8, help="idle consumers, each on its own topic")
    parser.add_argument("--idle-s", type=float, default=6.0, help="seconds of idling measured per wait")
    parser.add_argument("--messages", type=int, default=60, help="hops timed per wait")
    parser.add_argument("--bootstrap", default="", help="an existing broker; empty = start the embedded one")
    args = parser.parse_args(argv)
    embedded = None if args.bootstrap else EmbeddedBroker(free_port()).start()
    bootstrap = args.bootstrap or (embedded.bootstrap if embedded else "")
    broker = psutil.Process(embedded.process.pid) if embedded and embedded.process else None
    rows = []
    try:
        for wait in args.waits:
            print(f"fetch wait {wait} ms: {args.consumers} consumers idle for {args.idle_s:g} s, "
                  f"then {args.messages} hops ...", file=sys.stderr, flush=True)
            cost = measure(bootstrap, broker, wait, args.consumers, args.idle_s, args.messages)
            rows.append([cost.wait_ms, "-" if cost.broker_cpu_percent is None else f"{cost.broker_cpu_percent:.1f}",
                         f"{cost.clients_cpu_percent:.1f}", f"{cost.hop_p50_ms:.1f}", f"{cost.hop_p95_ms:.1f}"])
    finally:
        if embedded:
            embedded.stop()
    print(report_table.table(
        f"Idle polling cost and one hop's latency ({'embedded broker' if embedded else bootstrap}, "
        f"{args.consumers} idle consumers; CPU in % of one core)",
        ["fetch wait ms", "broker CPU %", "consumers' CPU %", "hop p50 ms", "hop p95 ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
