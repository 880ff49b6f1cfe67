"""A processor's Prometheus metrics, and their snapshot for the heartbeat (the gateway's /metrics shows them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infra.process_resources import resource_families
from schemas.status import MetricFamily, MetricSample

REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MESSAGES = Counter("avatar_processor_messages_total", "input messages handled, by outcome",
                   ["processor", "outcome"], registry=REGISTRY)
HANDLE_SECONDS = Histogram("avatar_processor_handle_seconds",
                           "first step → last output of one input message (turns of other partitions included)",
                           ["processor"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
QUEUE_LAG_SECONDS = Histogram("avatar_processor_queue_lag_seconds", "message produced → picked up by the processor",
                              ["processor"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
STAGE_SECONDS = Histogram("avatar_stage_seconds", "time per pipeline stage (per chunk or piece)",
                          ["stage"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
ARTICULATION_SOURCES = Counter("avatar_lipsync_segments_total",
                               "speech segments lip-synced, by where their visemes came from: the TTS's own phoneme "
                               "timings (tts), the audio estimator (estimated) or none (none: loudness only)",
                               ["source"], registry=REGISTRY)
UNKNOWN_PHONEMES = Counter("avatar_lipsync_unknown_phonemes_total",
                           "phoneme names the viseme table does not know (said as rest)", registry=REGISTRY)
BATCH_PIECES = Histogram("avatar_processor_batch_pieces",
                         "pieces (e.g. sessions' chunks) run in one shared step: one engine call serves them all",
                         ["processor"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=REGISTRY)
BATCH_SECONDS = Histogram("avatar_processor_batch_seconds", "time of one shared step's runner call (a batched render)",
                          ["processor"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
MODEL_LOAD_SECONDS = Gauge("avatar_model_load_seconds", "time the engine took to load at start-up", ["engine"],
                           registry=REGISTRY)


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)


def snapshot() -> list[MetricFamily]:
    """Every metric of this process, its memory and GPU included, as plain data for the heartbeat."""
    return [
        *(MetricFamily(name=family.name, kind=family.type, help=family.documentation,
                       samples=[MetricSample(name=s.name, labels=dict(s.labels), value=s.value)
                                for s in family.samples])
          for family in REGISTRY.collect()),
        *resource_families(),
    ]
