"""Container health probe of a processor: has this host's TTS, lip-sync or registration processor announced
itself lately?

Processors have no HTTP port; they heartbeat on ``avatar.status`` (the gateway's ``/ready`` reads the same
messages). A live process that stopped consuming stops heartbeating, which the container runtime should see.
Usage (docker-compose.yml): ``python infra/docker/healthcheck.py tts|lipsync|registration``; exit 0 healthy, 1 not.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from infra.kafka import consumer_config
from infra.settings import Settings, load_settings
from schemas.status import ServiceStatus

SERVICES = ("tts", "lipsync", "registration")
READ_BUDGET_S = 5.0


def freshness_window_s(settings: Settings) -> float:
    """The same staleness rule as the gateway's /ready: a few missed heartbeats, and never under 10 s."""
    return max(10.0, 5 * settings.heartbeat_interval_s)


def is_own_fresh_heartbeat(status: ServiceStatus, service: str, host: str, since_ms: int) -> bool:
    """Another replica's heartbeat must not make this container look healthy: match the hostname too."""
    return (status.service == service and status.instance.startswith(f"{host}:") and status.ready
            and status.ts_ms >= since_ms)


def recent_statuses(settings: Settings, since_ms: int) -> Iterator[ServiceStatus]:
    """The status messages produced since ``since_ms``, oldest first, for at most READ_BUDGET_S."""
    consumer = Consumer(consumer_config(settings, None))
    try:
        start = consumer.offsets_for_times([TopicPartition(settings.kafka_status_topic, 0, since_ms)],
                                           timeout=READ_BUDGET_S)[0]
        if start.offset < 0:  # nothing was produced since then
            return
        consumer.assign([start])
        yield from _drain(consumer, time.monotonic() + READ_BUDGET_S)
    finally:
        consumer.close()


def _drain(consumer: Consumer, deadline: float) -> Iterator[ServiceStatus]:
    seen_any = False
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            if seen_any:
                return  # caught up; before the first message the fetch may just not have started yet
            continue
        seen_any = True
        if message.error():
            continue
        try:
            yield ServiceStatus.model_validate_json(message.value() or b"")
        except ValidationError:
            continue


def check(settings: Settings, service: str, host: str) -> str | None:
    """None if healthy, else why not; stops reading at the first fresh heartbeat of this host's processor."""
    since_ms = int((time.time() - freshness_window_s(settings)) * 1000)
    try:
        if any(is_own_fresh_heartbeat(s, service, host, since_ms) for s in recent_statuses(settings, since_ms)):
            return None
    except KafkaException as error:  # broker down or topic missing: the processor cannot be serving either
        return f"cannot read {settings.kafka_status_topic}: {error}"
    return f"no heartbeat of '{service}' on host '{host}' in the last {freshness_window_s(settings):.0f} s"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: healthcheck.py {'|'.join(SERVICES)}", file=sys.stderr)
        return 2
    problem = check(load_settings(), argv[0], socket.gethostname())
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
