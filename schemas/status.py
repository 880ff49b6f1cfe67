"""Schema v1 of ``avatar.status``: processors announce they are up and serving (for the gateway's /ready)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AvatarCacheStats(BaseModel):
    """A lip-sync worker's in-memory avatar cache, as counted since the worker started."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    entries: int = Field(ge=0)
    bytes: int = Field(ge=0, description="memory held by the cached face data")
    hits: int = Field(ge=0)
    misses: int = Field(ge=0, description="loads from PostgreSQL")
    invalidations: int = Field(0, ge=0, description="avatars forgotten because they were deleted")
    max_entries: int = Field(ge=1)
    max_bytes: int = Field(ge=1)


class MetricSample(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class MetricFamily(BaseModel):
    """One Prometheus metric family of a processor, so the gateway's /metrics can show it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    kind: Literal["counter", "gauge", "histogram", "summary", "info", "stateset", "unknown"]
    help: str = ""
    samples: list[MetricSample] = Field(default_factory=list)


class VoiceEntry(BaseModel):
    """One voice a TTS processor can speak with: what a request's ``tts`` and ``voice`` name (GET /avatar/voices)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tts: str
    voice: str
    languages: list[str] = Field(description="what it speaks: fa, en")
    locale: str = Field("", description="the voice's own language code (piper: fa_IR, en_US)")
    dataset: str = Field("", description="piper: the voice's dataset (amir, lessac, ...)")
    quality: str = ""
    sample_rate: int | None = None
    default: bool = Field(False, description="spoken when a request names no voice (per language for piper)")


class GpuStatus(BaseModel):
    """Whether a processor runs its models on a GPU (ONNX Runtime's CUDA provider), and why not."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    configured: bool = Field(description="the processor's settings ask for a GPU (GPU_MEMORY_LIMIT set)")
    in_use: bool = Field(description="the CUDA provider is loaded in the process")
    reason: str | None = Field(None, description="not in use: why (what to install or check)")


class ServiceStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    service: str
    instance: str
    engine: str | None = None
    ready: bool
    ts_ms: int
    avatar_cache: AvatarCacheStats | None = None  # lip-sync workers only (additive: still v1)
    metrics: list[MetricFamily] = Field(default_factory=list)  # additive: still v1
    voices: list[VoiceEntry] = Field(default_factory=list)  # TTS processors only (additive: still v1)
    gpu: GpuStatus | None = None  # the processors that can run on a GPU (lip-sync); additive: still v1
