"""librdkafka's own log lines reach Python logging (structured like every other line), not raw stderr."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer

from infra.broker import free_port
from infra.kafka import producer_config
from infra.settings import Settings


def test_a_broker_that_cannot_be_reached_is_logged_through_the_librdkafka_logger(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", _env_file=None)  # nothing listens
    producer = Producer(producer_config(settings))
    with caplog.at_level(logging.INFO, logger="librdkafka"):
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            producer.poll(0.1)  # log lines are served by poll(), on this thread
    lines = [record for record in caplog.records if record.name == "librdkafka"]
    assert lines, "librdkafka reported nothing through Python logging"
    assert any("Connect to" in record.getMessage() or "refused" in record.getMessage() for record in lines)
    assert lines[0].levelno >= logging.WARNING
