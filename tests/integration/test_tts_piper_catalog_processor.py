"""The TTS processor with a piper catalog on a real broker: its heartbeats announce the catalog (what the gateway's
GET /avatar/voices lists), and a mixed request has its Persian and English runs said by the two voices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from gateway.status import ProcessorStatus
from infra.broker import EmbeddedBroker, free_port
from infra.kafka import new_producer
from infra.settings import Settings
from schemas.requests import TextRequest
from schemas.status import ServiceStatus
from tests.integration.test_tts_processor import read_until, speech_until

pytest.importorskip("piper", reason="the optional `piper` extra is not installed")

from tests.support.piper_voices import build_voice  # after the skip: needs piper's phoneme map
from tests.support.tts_processor import tts_processor_running

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    voices = tmp_path_factory.mktemp("piper-voices")
    build_voice(voices, "fa_IR", "amir")
    build_voice(voices, "en_US", "lessac")
    broker = EmbeddedBroker(free_port()).start()
    yield Settings(_env_file=None, kafka_bootstrap_servers=broker.bootstrap, log_level="WARNING",
                   tts_engine="piper", piper_voices_dir=voices, piper_voice_en="en_US-lessac-medium",
                   heartbeat_interval_s=0.5, data_dir=tmp_path_factory.mktemp("data"))
    broker.stop()


@pytest.fixture(scope="module")
def processor(own_settings: Settings) -> Iterator[None]:
    with tts_processor_running(own_settings):
        yield


def test_the_heartbeat_carries_the_catalog_the_gateway_lists(own_settings: Settings, processor: None) -> None:
    received = read_until(own_settings, own_settings.kafka_status_topic,
                          lambda got: any(ServiceStatus.model_validate_json(r.value).ready for r in got))
    statuses = ProcessorStatus()
    for record in received:
        statuses.record(record.value)
    [tts] = statuses.live("tts")
    piper = {entry.voice: entry for entry in tts.voices if entry.tts == "piper"}
    assert {"fa_IR-amir-medium", "en_US-lessac-medium"} <= set(piper)
    assert piper["fa_IR-amir-medium"].languages == ["fa"] and piper["fa_IR-amir-medium"].default
    assert piper["fa_IR-amir-medium"].locale == "fa_IR" and piper["fa_IR-amir-medium"].dataset == "amir"
    assert piper["en_US-lessac-medium"].default and tts.engine == "piper", "no espeak-ng: piper speaks both"


def test_a_mixed_request_through_kafka_is_said_by_the_persian_and_the_english_voice(
        own_settings: Settings, processor: None) -> None:
    producer: Producer = new_producer(own_settings)
    request = TextRequest(session_id="mixed", avatar_id="sample", tts="piper", rate=1.5,
                          text="به سایت www.isna.ir سر بزنید. Thank you.")
    producer.produce(own_settings.kafka_requests_topic, key=b"mixed", value=request.to_kafka())
    producer.flush(10)
    segments = speech_until(own_settings, lambda got: any(s.meta.request_id == request.request_id and s.meta.is_last
                                                          for s in got))
    said = [(s.meta.language, s.meta.voice) for s in segments if s.meta.request_id == request.request_id]
    assert said == [("fa", "fa_IR-amir-medium"), ("en", "en_US-lessac-medium"), ("fa", "fa_IR-amir-medium"),
                    ("en", "en_US-lessac-medium")]


def test_voices_dir_default_is_under_the_data_dir(tmp_path: Path) -> None:
    assert Settings(_env_file=None, data_dir=tmp_path).piper_voice_folder == tmp_path / "models" / "piper-voices"
