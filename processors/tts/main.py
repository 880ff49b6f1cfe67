"""The TTS processor service: ``avatar.requests`` → ``avatar.speech`` (errors to the session's topic)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from infra.logging import bind_log_context, configure_logging
from infra.settings import Settings, get_settings
from processors.common.control import ControlListener, InterruptRegistry
from processors.common.kafka_app import Inbound, KafkaApp, Outgoing, parse_message, run_until_stopped
from processors.tts.audio import LoudnessTarget
from processors.tts.core import TtsCore
from processors.tts.engines.base import EngineConfigError
from processors.tts.engines.registry import EngineSet, build_engines
from schemas.requests import TextRequest
from schemas.session import SessionError
from schemas.speech import SpeechError

log = logging.getLogger(__name__)


class TtsConfigError(SystemExit):
    """A selected TTS backend is not configured: the processor refuses to start, saying what is missing."""


def build_engine_set(settings: Settings) -> EngineSet:
    try:
        return build_engines(settings)
    except EngineConfigError as error:
        raise TtsConfigError(f"tts processor cannot start: {error}") from None


def build_core(settings: Settings) -> TtsCore:
    return TtsCore(build_engine_set(settings), max_text_chars=settings.max_text_chars,
                   first_piece_chars=settings.tts_first_piece_chars, piece_chars=settings.tts_piece_chars,
                   loudness=LoudnessTarget(rms_dbfs=settings.tts_loudness_dbfs))


def start_core(settings: Settings) -> TtsCore:
    """The core with every backend built and warmed up: what the processor needs before it takes requests."""
    core = build_core(settings)
    try:
        core.warm_up()
    except EngineConfigError as error:
        raise TtsConfigError(f"tts processor cannot start: {error}") from None
    return core


def parse_request(value: bytes) -> TextRequest:
    return parse_message(TextRequest, value, "avatar.requests v1")


class TtsProcessor:
    """Kafka adapter around TtsCore."""

    def __init__(self, settings: Settings, core: TtsCore) -> None:
        self.settings = settings
        self.core = core
        self.control: ControlListener | None = None
        voices = [entry.model_dump() for entry in core.engines.voice_list()]  # fixed from start-up on
        self.app = KafkaApp(settings, name="tts", input_topic=settings.kafka_requests_topic, handler=self.handle,
                            engine=",".join(core.engines.names), status_fields=lambda: {"voices": voices})

    def handle(self, message: Inbound) -> Iterator[Outgoing]:
        request = parse_request(message.value)
        bind_log_context(request_id=request.request_id, session_id=request.session_id)
        session_key = request.session_id.encode()
        for out in self.core.handle(request):
            # Errors take the speech topic too: the lip-sync processor is the session topic's one writer.
            message_out = out if not isinstance(out, SessionError) else SpeechError(
                request_id=request.request_id, session_id=request.session_id, code=out.code, message=out.message)
            yield Outgoing(self.settings.kafka_speech_topic, session_key, message_out.to_kafka())


def create(settings: Settings) -> TtsProcessor:
    core = start_core(settings)
    interrupts = InterruptRegistry()
    core.is_interrupted = interrupts.is_interrupted
    processor = TtsProcessor(settings, core)
    processor.app.admin.ensure_pipeline_topics()
    processor.control = ControlListener(settings, interrupts).start()  # barge-in stops the remaining pieces
    return processor


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, service="tts")
    processor = create(settings)
    log.info("tts processor running", extra={"engine": processor.core.engine.name})
    run_until_stopped(processor.app, [processor.control])


if __name__ == "__main__":
    main()
