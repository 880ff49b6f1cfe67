"""The lip-sync processor service: ``avatar.speech`` → ``avatar.session.<session_id>`` video chunks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from pydantic import ValidationError

from infra.avatar_store import AvatarNotFound, AvatarStore
from infra.crypto import FaceDataDecryptionError, face_keyring
from infra.database import ensure_database, open_pool
from infra.idle_clip_store import IdleClipStore
from infra.logging import bind_log_context, configure_logging
from infra.migrations import migrate
from infra.settings import Settings, get_settings
from processors.common import metrics
from processors.common.batching import Shared
from processors.common.control import ControlListener, InterruptRegistry
from processors.common.kafka_app import Inbound, InvalidMessage, KafkaApp, Outgoing, run_until_stopped
from processors.lipsync.avatar_cache import AvatarCache, InvalidationListener
from processors.lipsync.core import AvatarUnavailable, LipSyncCore, UnknownAvatar
from processors.lipsync.engines.base import LipSyncEngine
from processors.lipsync.engines.embedded import EmbeddedEngine
from processors.lipsync.engines.wav2lip import Wav2LipEngine, Wav2LipModelError
from processors.lipsync.idle_clips import IdleClipWorker, LiveActivity
from processors.lipsync.pacing import PlaybackDeadlines
from processors.lipsync.progress import SessionTopicProgress
from processors.lipsync.viseme_estimator import VisemeEstimator, VisemeEstimatorError
from processors.lipsync.visemes import UnknownPhonemes
from schemas.avatar import AvatarFaceData
from schemas.envelope import EnvelopeError
from schemas.speech import SpeechError, SpeechSegment, parse_speech

log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> LipSyncEngine:
    """The warm engine, created once at start-up; a request never loads a model."""
    started = time.perf_counter()
    engine: LipSyncEngine
    if settings.lipsync_engine == "wav2lip":
        try:
            engine = Wav2LipEngine.from_settings(settings)
        except Wav2LipModelError as error:  # a missing or foreign model stops start-up with one clear line
            raise SystemExit(f"LIPSYNC_ENGINE=wav2lip: {error}") from None
        details = {"batch": engine.batch_size, "provider": engine.provider}
    else:
        engine = EmbeddedEngine()
        details = {}
    load_s = time.perf_counter() - started
    metrics.MODEL_LOAD_SECONDS.labels(engine.name).set(load_s)
    log.info("lip-sync engine ready", extra={"engine": engine.name, "load_ms": round(1000 * load_s, 1), **details})
    return engine


def batch_frames(settings: Settings, engine: LipSyncEngine) -> int:
    """Frames per shared render (LIPSYNC_BATCH_FRAMES): by default the engine's own inference batch, never less than
    a chunk; 1 (no sharing) for an engine without one: the embedded engine's warp has nothing to batch, and a
    companion's chunk would only delay the others'."""
    if settings.lipsync_batch_frames:
        return settings.lipsync_batch_frames
    batch = int(getattr(engine, "batch_size", 0))
    return max(settings.chunk_frames, batch) if batch else 1


def load_estimator() -> VisemeEstimator:
    """The audio → viseme estimator for speech that comes without the TTS's timings; loaded at start-up."""
    try:
        return VisemeEstimator.load()
    except VisemeEstimatorError as error:
        raise SystemExit(f"lip-sync: the viseme estimator cannot load: {error}") from None


def count_unknown_phoneme(_name: str) -> None:
    metrics.UNKNOWN_PHONEMES.inc()


def count_articulation_source(source: str) -> None:
    metrics.ARTICULATION_SOURCES.labels(source).inc()


def parse_segment(value: bytes) -> SpeechSegment | SpeechError:
    try:
        return parse_speech(value)
    except (EnvelopeError, ValidationError, ValueError) as error:
        raise InvalidMessage(f"not a valid avatar.speech message: {error}") from None


class LipSyncProcessor:
    """Kafka adapter around LipSyncCore; avatars come from PostgreSQL through an in-memory cache."""

    def __init__(self, settings: Settings, engine: LipSyncEngine, store: AvatarStore,
                 interrupts: InterruptRegistry | None = None, estimator: VisemeEstimator | None = None) -> None:
        self.settings = settings
        self.store = store
        self.cache = AvatarCache(self._load_avatar, max_entries=settings.avatar_cache_max_entries,
                                 max_bytes=settings.avatar_cache_max_bytes)
        self.invalidations: InvalidationListener | None = None
        self.interrupts = interrupts or InterruptRegistry()
        self.deadlines = PlaybackDeadlines()
        self.core = LipSyncCore(engine, self.cache.get, fps=settings.video_fps, chunk_frames=settings.chunk_frames,
                                first_chunk_frames=settings.first_chunk_frames,
                                crf=settings.video_crf, is_interrupted=self.interrupts.is_interrupted,
                                progress=SessionTopicProgress(settings), observe_stage=metrics.observe_stage,
                                estimate_onsets=(estimator or load_estimator()).estimate,
                                unknown=UnknownPhonemes(count_unknown_phoneme),
                                observe_source=count_articulation_source)
        self.control: ControlListener | None = None
        self.live = LiveActivity()  # idle clips render in the pauses of the live requests (idle_clips.py)
        self.idle_clips: IdleClipWorker | None = None
        self.app = KafkaApp(
            settings, name="lipsync", input_topic=settings.kafka_speech_topic, handler=self.live.track(self.handle),
            engine=engine.name,
            status_fields=lambda: {"avatar_cache": self.cache.stats()},
            batch=self.core.render_batch, max_batch=batch_frames(settings, engine),
        )

    def _load_avatar(self, avatar_id: str) -> AvatarFaceData:
        try:
            return self.store.load_face_data(avatar_id)
        except AvatarNotFound:
            raise UnknownAvatar(avatar_id) from None
        except FaceDataDecryptionError as error:  # e.g. a key rotated away: the client must hear why
            log.error("avatar face data cannot be decrypted", extra={"avatar_id": avatar_id, "error": str(error)})
            raise AvatarUnavailable(avatar_id, f"avatar '{avatar_id}' cannot be read with the configured "
                                               f"FACE_DATA_KEYS") from None

    def handle(self, message: Inbound) -> Iterator[Outgoing | Shared]:
        segment = parse_segment(message.value)
        meta = segment.meta if isinstance(segment, SpeechSegment) else segment
        bind_log_context(request_id=meta.request_id, session_id=meta.session_id)
        topic = self.settings.session_topic(meta.session_id)
        session_key = meta.session_id.encode()
        events = (self.core.steps(segment, recovering=message.recovering) if isinstance(segment, SpeechSegment)
                  else self.core.fail(segment))
        for event in events:
            if isinstance(event, Shared):  # a chunk's render: the app runs it with other sessions' (one engine call)
                yield event
                continue
            due = self.deadlines.next_due(event.meta, time.perf_counter())
            yield Outgoing(topic, session_key, event.to_kafka(), due=due)


def create(settings: Settings) -> LipSyncProcessor:
    ensure_database(settings.database_url)
    migrate(settings.database_url)  # the idle_clips table, if this worker starts before the others
    pool = open_pool(settings.database_url, settings.database_pool_size, name="lipsync",
                     acquire_timeout_s=settings.database_acquire_timeout_s)
    store = AvatarStore(pool, face_keyring(settings))
    processor = LipSyncProcessor(settings, build_engine(settings), store)
    processor.app.admin.ensure_pipeline_topics()
    processor.control = ControlListener(settings, processor.interrupts).start()
    processor.invalidations = InvalidationListener(settings, processor.cache).start()
    processor.idle_clips = IdleClipWorker(settings, processor.core.engine, store, IdleClipStore(pool, store.keyring),
                                          processor.live).start()
    return processor


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="lipsync")
    processor = create(settings)
    log.info("lip-sync processor running", extra={"engine": processor.core.engine.name})
    try:
        run_until_stopped(processor.app, [processor.control, processor.invalidations])
    finally:
        if processor.idle_clips is not None:
            processor.idle_clips.stop()


if __name__ == "__main__":
    main()
