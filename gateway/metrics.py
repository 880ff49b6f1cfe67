"""The gateway's Prometheus metrics: latency to first chunk, sessions, chunks, errors by code; every service's
memory and GPU (the processors' from their heartbeats); registration time (from PostgreSQL)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from consumers.session_reader import Chunk
from gateway.status import ProcessorStatus
from infra.process_resources import resource_families
from infra.registration_jobs import registration_times

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

FIRST_CHUNK_SECONDS = Histogram(
    "avatar_first_chunk_seconds", "text_input received → first video chunk sent to the client",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0), registry=REGISTRY)
CHUNK_MARGIN_SECONDS = Histogram(
    "avatar_chunk_margin_seconds", "how long before its playback time a chunk reached the client "
    "(negative: a stall)", buckets=(-1.0, -0.2, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0), registry=REGISTRY)
ACTIVE_CONNECTIONS = Gauge("avatar_ws_connections", "open WebSocket connections", registry=REGISTRY)
REQUESTS = Counter("avatar_requests_total", "text requests accepted", ["language"], registry=REGISTRY)
CHUNKS = Counter("avatar_chunks_sent_total", "video chunks sent to clients", registry=REGISTRY)
ERRORS = Counter("avatar_errors_total", "errors sent to clients, by code", ["code"], registry=REGISTRY)
INTERRUPTS = Counter("avatar_interrupts_total", "requests interrupted by clients", registry=REGISTRY)
DROPPED_SLOW = Counter("avatar_slow_clients_dropped_total", "clients dropped for reading too slowly",
                       registry=REGISTRY)


class LatencyWatch:
    """One connection's latency figures: text accepted → first chunk sent, and each chunk's margin to playback.

    A chunk's playback time is its ``pts_ms`` after the moment its request's first chunk went out; a chunk
    sent later than that is a stall the client sees (a negative margin).
    """

    def __init__(self) -> None:
        self._accepted_at: dict[str, float] = {}  # request → when accepted, until its first chunk
        self._playback_origin: dict[str, float] = {}  # request → when its first chunk went out

    def accepted(self, request_id: str) -> None:
        self._accepted_at[request_id] = time.perf_counter()

    def withdrawn(self, request_id: str) -> None:
        self._accepted_at.pop(request_id, None)

    def chunk_sent(self, chunk: Chunk) -> None:
        now = time.perf_counter()
        CHUNKS.inc()
        accepted = self._accepted_at.pop(chunk.request_id, None)
        if accepted is not None:
            FIRST_CHUNK_SECONDS.observe(now - accepted)
            self._playback_origin[chunk.request_id] = now
        origin = self._playback_origin.get(chunk.request_id)
        if origin is not None:
            CHUNK_MARGIN_SECONDS.observe(origin + chunk.pts_ms / 1000 - now)
        if chunk.is_last:
            self._playback_origin.pop(chunk.request_id, None)


class ProcessorMetrics(Collector):
    """The processors' own metrics, from their latest heartbeats, and this gateway's memory and GPU, labelled with
    service and instance (one family per name, so the gateway's RSS and a processor's share one)."""

    def __init__(self) -> None:
        self.source: ProcessorStatus | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}"  # as processors name theirs

    def collect(self) -> Iterator[Metric]:
        if self.source is None:
            return
        families: dict[str, Metric] = {}
        reports = [("gateway", self.instance, resource_families()),
                   *((status.service, status.instance, status.metrics) for status in self.source.all_live())]
        for service, instance, reported in reports:
            for family in reported:
                metric = families.setdefault(family.name, Metric(family.name, family.help, family.kind))
                for sample in family.samples:
                    labels = {**sample.labels, "service": service, "instance": instance}
                    metric.add_sample(sample.name, labels, sample.value)
        yield from families.values()
        cache = Metric("avatar_cache_hit_ratio", "lip-sync avatar cache hits / lookups", "gauge")
        for status in self.source.live("lipsync"):
            if status.avatar_cache is not None:
                lookups = status.avatar_cache.hits + status.avatar_cache.misses
                ratio = status.avatar_cache.hits / lookups if lookups else 0.0
                cache.add_sample("avatar_cache_hit_ratio", {"instance": status.instance}, ratio)
        yield cache


class RegistrationTimeMetrics(Collector):
    """Registration time, upload staged → job finished, per outcome: counted in PostgreSQL as each job finishes,
    so every gateway shows the same cumulative histogram, whichever gateway took the upload."""

    def __init__(self) -> None:
        self.pool: ConnectionPool | None = None

    def collect(self) -> Iterator[Metric]:
        if self.pool is None:
            return
        try:
            histograms = registration_times(self.pool)
        except Exception as error:  # the database down: /metrics still answers, /ready says what is missing
            log.warning("registration times unavailable", extra={"error": str(error)})
            return
        family = HistogramMetricFamily("avatar_registration_seconds", "upload staged → registration job finished "
                                       "(queue, analysis, storing), by outcome", labels=["outcome"])
        for times in histograms:
            buckets = [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in times.buckets]
            family.add_metric([times.outcome], buckets, times.seconds_sum)
        yield family


PROCESSOR_METRICS = ProcessorMetrics()
REGISTRY.register(PROCESSOR_METRICS)
REGISTRATION_TIMES = RegistrationTimeMetrics()
REGISTRY.register(REGISTRATION_TIMES)
