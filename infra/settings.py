"""The one typed settings object of every service, read from the environment and validated at start-up."""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ByteSize,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from infra.crypto import SINGLE_KEY_ID, decode_key, parse_face_keys  # imports Settings for typing only

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIZE_UNITS = "KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024"
_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)


def _size_in_bytes(value: object) -> object:
    """A size given as bytes or with a unit ("1GB", "512MiB", "1048576"); anything else is left to int's checks."""
    if not isinstance(value, str):
        return value
    try:
        return int(_BYTE_SIZE.validate_python(value.strip()))
    except ValidationError:
        raise ValueError(f"not a size: give bytes or a number with a unit, e.g. 512MiB or 20GB ({SIZE_UNITS})"
                         ) from None


# Every size setting takes units, so AVATAR_CACHE_MAX_BYTES=1GB works as GPU_MEMORY_LIMIT=20GB does.
Bytes = Annotated[int, BeforeValidator(_size_in_bytes)]


class Settings(BaseSettings):
    """Everything configurable, with the defaults `make run` uses on one laptop."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The brief's names come last: this service's own name for a setting always wins (and both is an error).
        return (init_settings, env_settings, dotenv_settings, BriefNamesSource(settings_cls, env_settings,
                                                                               dotenv_settings), file_secret_settings)

    # Where things run
    host: str = Field("0.0.0.0", description="address the gateway listens on")
    port: int = Field(5002, ge=1, le=65535, description="gateway HTTP and WebSocket port")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="DEBUG, INFO, WARNING or ERROR (quiet by default)")
    log_format: Literal["json", "text"] = Field("json", description="json (one JSON object a line on stderr) or text")
    dev_mode: bool = Field(True,
                           description="dev mode: no auth, a generated face-data key; false in production (needs "
                                       "ADMIN_TOKEN, AUTH_SECRET)")
    data_dir: Path = Field(PROJECT_ROOT / ".data",
                           description="where the embedded database, models, keys and caches live")

    # Kafka: empty means "start the embedded broker" (make run and the tests)
    kafka_bootstrap_servers: str = Field("",
                                         description="an existing Kafka cluster (host:port,...); empty = start the "
                                                     "embedded broker")
    embedded_kafka_port: int = Field(9092, ge=1, le=65535,
                                     description="port of the embedded broker (when KAFKA_BOOTSTRAP_SERVERS is empty)")
    kafka_requests_topic: str = Field("avatar.requests",
                                      description="topic of text requests (gateway, SDK -> TTS processor)")
    kafka_speech_topic: str = Field("avatar.speech", description="topic of speech segments (TTS -> lip-sync processor)")
    kafka_dlq_topic: str = Field("avatar.dlq",
                                 description="dead-letter topic: messages that failed validation, with the reason")
    kafka_status_topic: str = Field("avatar.status", description="processors' heartbeats (read by /ready and /metrics)")
    kafka_control_topic: str = Field("avatar.control", description="interrupts, read by every processor instance")
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60, description="seconds between a processor's heartbeats")
    kafka_session_topic_prefix: str = Field("avatar.session.", description="prefix of each session's output topic")
    kafka_partitions: int = Field(6, ge=1, le=1024,
                                  description="partitions of the requests and speech topics (the unit of scale-out)")
    kafka_fetch_wait_ms: int | None = Field(None, ge=1, le=1000,
                                            description="consumer fetch wait in ms; empty = by broker: 10 on the "
                                                        "embedded one (its hop latency), 500 on Kafka (long poll)")
    kafka_max_message_bytes: Bytes = Field(16 * 1024 * 1024, ge=1024 * 1024,
                                         description="largest Kafka message (a size: bytes, 16MiB, ...)")
    kafka_session_timeout_ms: int = Field(6000, ge=1000, description="consumer-group session timeout in ms")
    startup_wait_s: float = Field(60.0, ge=0, description="how long a service waits for the broker at start-up")
    # Topics the services create (pipeline and per-session). On a cluster: 3 and 2, so a broker can fail
    # without losing an acknowledged chunk (producers use acks=all). The embedded broker is one node: 1 and 1.
    kafka_replication_factor: int = Field(1, ge=1, le=16,
                                          description="replicas of the topics the services create (3 on a cluster)")
    kafka_min_insync_replicas: int = Field(1, ge=1, le=16,
                                           description="replicas that must acknowledge a write (2 on a cluster)")

    # PostgreSQL: the local server by default; the database is created if missing
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/avatar",
                              description="PostgreSQL URL; the database is created if missing")
    database_fallback_embedded: bool = Field(True,
                                             description="start an embedded PostgreSQL under DATA_DIR when none "
                                                         "answers at DATABASE_URL")
    database_pool_size: int = Field(8, ge=1, le=200, description="pooled database connections per process")
    database_acquire_timeout_s: float = Field(
        3.0, gt=0, le=60, description="how long a request waits for a pooled connection before a 503: short, "
        "so an outage answers 'database_unavailable' at once instead of holding clients")

    # Requests
    max_text_chars: int = Field(2000, ge=1, le=100_000, description="longest accepted text, in characters")
    tts_engine: Literal["espeak", "openai", "piper"] = Field("espeak",
                                                             description="default TTS backend: espeak, openai or piper")

    # Speech (issue 5, processors/tts; docs/speech.md). TTS_ENGINE is the default backend; TTS_EXTRA_ENGINES
    # lists the others a request may pick with `tts`. Every one of them must be configured, or the TTS
    # processor stops at start-up naming what is missing (an OpenAI key, the piper package, a voice file).
    tts_extra_engines: str = Field("", description="comma-separated: espeak, openai, piper")
    tts_first_piece_chars: int = Field(60, ge=10, le=1000, description="the first piece is short: latency")
    tts_piece_chars: int = Field(220, ge=20, le=4000, description="characters per text piece after the first")
    tts_loudness_dbfs: float = Field(-20.0, ge=-40.0, le=-6.0, description="gated RMS every piece is set to")
    espeak_rate_wpm: int = Field(165, ge=80, le=450, description="espeak-ng speaking rate, words per minute")
    espeak_pitch: int = Field(50, ge=0, le=99, description="espeak-ng pitch, 0-99")
    espeak_voice_fa: str = Field("fa", pattern=r"^[A-Za-z0-9_+.-]{1,64}$", description="espeak-ng voice for Persian")
    espeak_voice_en: str = Field("en-us", pattern=r"^[A-Za-z0-9_+.-]{1,64}$", description="espeak-ng voice for English")
    openai_api_key: SecretStr | None = Field(None, description="API key of the openai TTS backend")
    openai_base_url: str | None = Field(None, description="an OpenAI-compatible server; empty = OpenAI itself")
    openai_tts_model: str = Field("gpt-4o-mini-tts", description="OpenAI speech model")
    openai_tts_voice: str = Field("alloy", description="OpenAI voice")
    openai_timeout_s: float = Field(15.0, gt=0, le=300, description="seconds an OpenAI speech request may take")
    openai_max_retries: int = Field(2, ge=0, le=10, description="retries of a failed OpenAI speech request")
    # Piper is a voice catalog (docs/speech.md): every .onnx + .onnx.json pair in PIPER_VOICES_DIR, plus
    # PIPER_MODEL (one file, kept for old deployments), plus the joe voice's package when it is installed.
    piper_voices_dir: Path | None = Field(None, description="folder of piper voices (.onnx with its .onnx.json); "
                                                            "empty = DATA_DIR/models/piper-voices")
    piper_model: Path | None = Field(None, description="one more piper .onnx voice, added to the catalog")
    piper_voice_fa: str = Field("", pattern=r"^([A-Za-z0-9_+.-]{1,64})?$",
                                description="the piper voice for Persian; empty = the catalog's first fa voice")
    piper_voice_en: str = Field("", pattern=r"^([A-Za-z0-9_+.-]{1,64})?$",
                                description="the piper voice for English; empty = the catalog's first en voice")
    piper_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads of the piper voice")

    @field_validator("tts_extra_engines")
    @classmethod
    def _extra_engines_are_known(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - {"espeak", "openai", "piper"})
        if unknown:
            raise ValueError(f"unknown TTS engine(s) {', '.join(unknown)}; known: espeak, openai, piper")
        return ",".join(names)

    @field_validator("piper_model", "piper_voices_dir", mode="before")
    @classmethod
    def _empty_piper_path_means_the_default(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def piper_voice_folder(self) -> Path:
        """Where the piper voice catalog is (scripts/download_models.py --piper-voice installs into it)."""
        return self.piper_voices_dir or self.data_dir / "models" / "piper-voices"

    # Rate limits per caller (the user of a token, else the client IP), per gateway process
    rate_limit_uploads_per_min: float = Field(10, gt=0, description="avatar uploads per caller per minute")
    rate_limit_requests_per_min: float = Field(120, gt=0, description="text requests over WebSocket and REST")
    rate_limit_connections_per_min: float = Field(60, gt=0, description="WebSocket connections per caller per minute")

    # WebSocket sessions
    session_idle_ttl_s: float = Field(600.0, ge=5, description="an unused session's topic is deleted after this")
    ws_max_pending_messages: int = Field(256, ge=8, description="a client this far behind is dropped (resumable)")
    ws_max_message_bytes: Bytes = Field(1024 * 1024, ge=64 * 1024,
                                        description="largest WebSocket message read; a larger one closes the "
                                                    "connection with 1009 (the session can be resumed)")

    # Audio input (the agent's own speech instead of text; producers/audio.py, docs/clients.md)
    # 5 s at 48 kHz is 640 kB of base64: it fits WS_MAX_MESSAGE_BYTES, so a long message is answered, not cut off.
    audio_max_message_s: float = Field(5.0, gt=0, le=600, description="most audio in one audio_input message or "
                                       "binary frame; more is refused (audio_message_too_long)")
    audio_max_utterance_s: float = Field(1800.0, gt=0, le=24 * 3600, description="longest utterance or audio file; "
                                         "longer is refused (audio_too_long)")
    audio_max_upload_bytes: Bytes = Field(50 * 1024 * 1024, ge=1024,
                                          description="largest audio file on POST /avatar/process (a size)")

    # WebRTC output (gateway/webrtc/, docs/clients.md): each peer sends its session on this gateway's CPU (the
    # H.264 passed through, the AAC decoded to Opus; VP8 peers re-encode the video too), so peers beyond the
    # bound are refused (503) rather than starving others.
    webrtc_max_peers: int = Field(8, ge=0, le=1000, description="WebRTC peers at once on this gateway; 0 = off")
    webrtc_lead_ms: int = Field(40, ge=0, le=2000,
                                description="a request's WebRTC playout starts this far after its first chunk")
    webrtc_ice_addresses: str = Field("", description="comma-separated addresses WebRTC gathers host candidates on; "
                                      "empty = every interface but loopback (aiortc's choice)")

    @field_validator("webrtc_ice_addresses")
    @classmethod
    def _ice_addresses_are_addresses(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                ipaddress.ip_address(part)  # a name or a typo fails here, not at the first offer
        return value

    # Lip-sync
    lipsync_engine: Literal["embedded", "wav2lip"] = Field("embedded",
                                                           description="lip-sync engine: embedded (no model file) or "
                                                                       "wav2lip (WAV2LIP_MODEL_PATH)")
    # How many lip-sync processes `make run` starts. They share one consumer group, so the sessions are split
    # between them: a long sentence being rendered for one session then no longer delays another's first chunk.
    lipsync_workers: int = Field(1, ge=1, le=16, description="lip-sync processes started by make run")
    video_fps: int = Field(25, ge=10, le=60, description="video frames per second")
    chunk_frames: int = Field(12, ge=1, le=250, description="frames per video chunk after the first")
    first_chunk_frames: int = Field(10, ge=1, le=250, description="a request's first chunk: small for latency, "
                                    "long enough that the second arrives before it has played")
    video_crf: int = Field(23, ge=0, le=51, description="H.264 quality (0 best, 51 worst)")
    lipsync_batch_frames: int = Field(0, ge=0, le=1024,
                                      description="frames of several sessions' chunks rendered in one engine call; "
                                                  "0 = the engine's batch (Wav2Lip's, at least a chunk); 1 = none")

    # Wav2Lip engine (LIPSYNC_ENGINE=wav2lip): an ONNX model made by scripts/convert_wav2lip.py from the
    # user's own checkpoint (see docs/engines.md); checked, loaded and warmed up once when the processor starts
    wav2lip_model_path: Path = Field(PROJECT_ROOT / ".data" / "models" / "wav2lip.onnx",
                                     description="the converted Wav2Lip ONNX model")
    wav2lip_batch_size: int = Field(0, ge=0, le=256, description="frames per inference; 0 = calibrate at start-up")
    onnx_threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads; 0 = one per core")

    # Auth: off in dev mode (make run); outside it an admin token and a signing secret are required
    admin_token: SecretStr | None = Field(None,
                                          description="admin bearer token (16+ characters; required with "
                                                      "DEV_MODE=false)")
    auth_secret: SecretStr | None = Field(None,
                                          description="secret that signs user tokens (16+ characters; required with "
                                                      "DEV_MODE=false)")
    user_token_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="lifetime of a user token in seconds")
    cors_origins: str = Field("", description="comma-separated allowed origins; empty = same origin only")

    # Avatars
    sample_avatar_id: str = Field("sample", description="id of the bundled sample avatar")
    register_sample_avatar: bool = Field(True, description="the registration worker registers the sample avatar "
                                                           "at start-up")
    max_upload_bytes: Bytes = Field(50 * 1024 * 1024, ge=1024,
                                  description="largest avatar upload (a size: bytes, 50MiB, ...)")

    # Avatar registration and the lip-sync avatar cache (issue 3; docs/avatars.md). Registration workers
    # analyse one upload at a time each, so uploads beyond workers + queue are refused (503), not piled up.
    face_backend: Literal["dlib", "insightface"] = Field("dlib",
                                                         description="face detector and landmarks at registration: "
                                                                     "dlib or insightface")
    insightface_model_dir: Path | None = Field(None, description="SCRFD + 68-point landmark ONNX pack (local)")
    registration_workers: int = Field(1, ge=1, le=32,
                                      description="registration worker processes make run starts (each analyses "
                                                  "one upload at a time)")
    registration_queue: int = Field(8, ge=0, le=1000,
                                    description="uploads waiting for a worker, across all gateways (counted in "
                                                "PostgreSQL); beyond workers + queue: 503")
    registration_wait_s: float = Field(300.0, gt=0, le=3600,
                                       description="a POST /avatar/register without ?async waits this long for "
                                                   "the worker, then answers 504 with the job to poll")
    kafka_registration_topic: str = Field("avatar.registrations",
                                          description="registration jobs (gateway -> registration worker); the "
                                                      "upload itself is staged in PostgreSQL")
    registration_max_pixels: int = Field(40_000_000, ge=10_000, description="refused from the header")
    registration_max_duration_s: float = Field(30.0, gt=0, le=600, description="longest accepted video avatar, seconds")
    registration_max_frames: int = Field(300, ge=1, le=3000, description="a longer clip is strided down")
    avatar_cache_max_entries: int = Field(64, ge=1, description="avatars the lip-sync processor keeps in memory")
    avatar_cache_max_bytes: Bytes = Field(2 * 1024**3, ge=1024 * 1024,
                                        description="memory of the lip-sync avatar cache (a size: 1GB, 512MiB, "
                                                    "bytes); the brief's AVATAR_CACHE_SIZE")
    kafka_avatar_invalidation_topic: str = Field("avatar.invalidations",
                                                 description="avatar deleted or replaced: every lip-sync instance "
                                                             "drops it from its cache")
    kafka_idle_clip_topic: str = Field("avatar.idle-clips",
                                       description="idle-clip requests (gateway, registration worker -> the "
                                                   "lip-sync workers of each engine, at background priority)")

    @model_validator(mode="after")
    def _insightface_needs_a_model_pack(self) -> Settings:
        # The pack's files and signatures are checked when the registration worker loads it; a missing
        # directory is caught here so the error names the variable. Nothing is ever downloaded.
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
    gpu_memory_limit: Bytes = Field(0, ge=0, description="CUDA arena cap of the Wav2Lip engine, e.g. 20GB; 0 = no cap")

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


@dataclass(frozen=True)
class BriefName:
    """A variable named in the product brief that is not one of ours: the setting it means here, or a refusal.

    ``means`` is the field it sets (the value passes through ``values`` when given, lower-cased; a value mapped
    to None has no effect); ``refusal`` says why it cannot be honoured and what to use instead.
    """

    means: str | None = None
    values: dict[str, str | None] | None = None
    refusal: str = ""


BRIEF_NAMES: dict[str, BriefName] = {
    "AVATAR_CACHE_SIZE": BriefName(means="avatar_cache_max_bytes"),
    "SKIP_MODEL_LOADING": BriefName(means="lipsync_engine", values={
        "true": "embedded", "1": "embedded", "yes": "embedded", "false": None, "0": None, "no": None}),
    "MODEL_CACHE_SIZE": BriefName(refusal=(
        "there is no model cache to size here: each lip-sync process loads its one model once at start-up and "
        "keeps it; cap the Wav2Lip model's GPU memory with GPU_MEMORY_LIMIT, the avatar cache with "
        "AVATAR_CACHE_MAX_BYTES")),
    "CHUNK_BUFFER_SIZE": BriefName(refusal=(
        "chunks are not buffered before sending here: each is streamed as soon as it is encoded; a chunk's "
        "length is CHUNK_FRAMES (FIRST_CHUNK_FRAMES for the first) and how far a slow client may fall behind "
        "is WS_MAX_PENDING_MESSAGES")),
}
# Read by other software in the same processes, so never "unknown" even though they carry one of our prefixes.
FOREIGN_NAMES = {"OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG", "OPENAI_ADMIN_KEY", "OPENAI_WEBHOOK_SECRET",
                 "ESPEAK_DATA_PATH"}


def env_name(field: str) -> str:
    return field.upper()


def brief_values(given: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """What the brief's names in ``given`` (NAME -> raw value) set here, and a line for each that is refused."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, brief in BRIEF_NAMES.items():
        raw = given.get(name)
        if raw is None:
            continue
        if brief.refusal:
            problems.append(f"{name}: not used by this service: {brief.refusal}")
            continue
        assert brief.means is not None
        value: str | None = raw
        if brief.values is not None:
            if raw.strip().lower() not in brief.values:
                problems.append(f"{name}={raw!r}: expected one of {', '.join(brief.values)}")
                continue
            value = brief.values[raw.strip().lower()]
        if value is None:
            continue
        own = given.get(env_name(brief.means))
        if own is not None and own.strip().lower() != value.strip().lower():
            problems.append(f"{name}: set {env_name(brief.means)} only ({name} is the brief's name for it, "
                            f"and the two disagree)")
            continue
        values[brief.means] = value
    return values, problems


def setting_prefixes() -> set[str]:
    """Prefixes shared by two or more of our variable names (AVATAR_, KAFKA_, TTS_, ...): a typo keeps them."""
    names = [env_name(field) for field in Settings.model_fields] + list(BRIEF_NAMES)
    heads = [name.split("_", 1)[0] + "_" for name in names if "_" in name]
    return {head for head in heads if heads.count(head) >= 2}


def unknown_variable_warnings(given: dict[str, str]) -> list[str]:
    """A line for each variable that looks like one of ours (by prefix) but is not, with the closest real name."""
    known = {env_name(field) for field in Settings.model_fields} | set(BRIEF_NAMES)
    prefixes = setting_prefixes()
    lines = []
    for name in sorted(given):
        if name in known or name in FOREIGN_NAMES or not name.startswith(tuple(prefixes)):
            continue
        closest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {closest[0]}?" if closest else "`python -m infra.settings --env-example` lists them"
        lines.append(f"warning: {name} is not a setting of this service and is ignored; {hint}")
    return lines


class BriefNamesSource(PydanticBaseSettingsSource):
    """The settings source that reads the brief's names from the environment and .env, or refuses them."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource,
                 dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env = env
        self.dotenv = dotenv

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for all fields at once

    def __call__(self) -> dict[str, Any]:
        values, problems = brief_values(variables_seen(self.env, self.dotenv))
        if problems:
            raise SettingsError("invalid configuration:\n" + "\n".join(f"  {line}" for line in problems))
        return values


def variables_seen(env: PydanticBaseSettingsSource | None = None,
                   dotenv: PydanticBaseSettingsSource | None = None) -> dict[str, str]:
    """Every variable of the environment and the .env file, upper-cased; the environment wins, as for settings."""
    env = env or EnvSettingsSource(Settings)
    dotenv = dotenv or DotEnvSettingsSource(Settings)
    seen: dict[str, str] = {}
    for source in (dotenv, env):
        for name, value in getattr(source, "env_vars", {}).items():
            if value is not None:
                seen[name.upper()] = value
    return seen


class SettingsError(SystemExit):
    """Raised at start-up for bad configuration; its message names every bad variable."""


def load_settings() -> Settings:
    """Read and validate the environment, or stop with one clear line per bad value; warn about likely typos."""
    try:
        settings = Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            variable = "_".join(str(part) for part in problem["loc"]).upper()
            lines.append(f"  {variable}{_shown_input(problem)}: {problem['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
    # Logging is configured from these settings, so the warnings go straight to stderr, once per process.
    for line in unknown_variable_warnings(variables_seen()):
        print(line, file=sys.stderr, flush=True)
    return settings


def _shown_input(problem: Any) -> str:
    """The bad value, unless it is a secret or the whole input (which holds every secret): keys stay out of logs."""
    field = Settings.model_fields.get(str(problem["loc"][0])) if problem["loc"] else None
    if field is None or "SecretStr" in str(field.annotation):
        return ""
    return f"={problem.get('input')!r}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def shown_value(settings: Settings, field: str) -> str:
    """A setting's value as it would be written in the environment; a secret only says whether it is set."""
    value = getattr(settings, field)
    if isinstance(value, SecretStr):
        return "(set)"
    return _as_env_value(value)


def effective_configuration(settings: Settings) -> str:
    """Every setting as NAME=value, by its environment name."""
    return "".join(f"{env_name(field)}={shown_value(settings, field)}\n" for field in Settings.model_fields)


def _as_env_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path) and value.is_relative_to(PROJECT_ROOT):
        return f"./{value.relative_to(PROJECT_ROOT)}"  # the project folder, where `make run` starts the services
    return str(value)


def _is_size(field: str) -> bool:
    return any(getattr(rule, "func", None) is _size_in_bytes for rule in Settings.model_fields[field].metadata)


def _default_shown(field: str) -> str:
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if _is_size(field) and isinstance(default, int) and default > 0:
        for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if default % factor == 0:
                return f"{default // factor}{unit}"
    return _as_env_value(default)


ENV_EXAMPLE_HEADER = f"""\
# Every setting of the avatar streaming service: its meaning, then NAME=default (commented out).
# GENERATED from infra/settings.py: `.venv/bin/python -m infra.settings --env-example > env.example`
# (tests/unit/test_env_example.py fails when this file is out of date). Copy it to .env and uncomment what you
# change; a variable in the environment wins over .env. Sizes take units: 512MiB, 1GB, 20GB or plain bytes
# ({SIZE_UNITS}).
# Relative paths are relative to the project folder, where `make run` starts the services.
"""


def env_example() -> str:
    """The text of env.example: each setting's meaning and default, then what the brief's own names do here."""
    parts = [ENV_EXAMPLE_HEADER]
    for field, info in Settings.model_fields.items():
        parts.append(f"\n# {info.description}\n#{env_name(field)}={_default_shown(field)}\n")
    parts.append("\n# The product brief's names that are not ours:\n")
    for name, brief in BRIEF_NAMES.items():
        if brief.refusal:
            parts.append(f"# {name}: refused at start-up: {brief.refusal}\n")
        elif brief.values is not None:
            setting = env_name(brief.means or "")
            for target in dict.fromkeys(v for v in brief.values.values() if v is not None):
                spelled = "/".join(value for value, to in brief.values.items() if to == target)
                parts.append(f"# {name}={spelled}: read as {setting}={target}\n")
            inert = "/".join(value for value, to in brief.values.items() if to is None)
            parts.append(f"# {name}={inert}: no effect\n")
        else:
            parts.append(f"# {name}: read as {env_name(brief.means or '')} (set one of the two)\n")
    parts.append("# CUDA_VISIBLE_DEVICES: read by CUDA itself: the GPUs ONNX Runtime's CUDA provider may use\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.settings",
                                     description="Print the effective configuration (NAME=value) or env.example.")
    parser.add_argument("--env-example", action="store_true", help="print env.example (every setting, its default)")
    if parser.parse_args(argv).env_example:
        sys.stdout.write(env_example())
    else:
        sys.stdout.write(effective_configuration(load_settings()))


if __name__ == "__main__":
    main()
