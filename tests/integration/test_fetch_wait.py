"""Consumers poll as the broker they reach needs: briskly on the embedded broker, Kafka's long poll on a cluster."""

from __future__ import annotations

from infra.broker import EmbeddedBroker, free_port
from infra.kafka import (
    BACKGROUND_FETCH_WAIT_MS,
    EMBEDDED_FETCH_WAIT_MS,
    KAFKA_FETCH_WAIT_MS,
    consumer_config,
    fetch_wait_for_cluster,
)
from infra.settings import Settings


def test_consumers_of_the_embedded_broker_get_its_brisk_fetch_wait(broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, _env_file=None)
    assert consumer_config(settings, "g")["fetch.wait.max.ms"] == EMBEDDED_FETCH_WAIT_MS


def test_a_cluster_other_than_the_embedded_broker_gets_kafkas_long_poll() -> None:
    assert fetch_wait_for_cluster("MkU3OEVBNTcwNTJENDM2Qk") == KAFKA_FETCH_WAIT_MS
    assert fetch_wait_for_cluster("tansu_cluster") == EMBEDDED_FETCH_WAIT_MS


def test_an_explicit_fetch_wait_wins_whatever_the_broker(broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_fetch_wait_ms=250, _env_file=None)
    assert consumer_config(settings, "g")["fetch.wait.max.ms"] == 250


def test_a_broker_not_reachable_yet_gets_the_brisk_wait_that_costs_no_latency() -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", _env_file=None)
    assert consumer_config(settings, "g")["fetch.wait.max.ms"] == EMBEDDED_FETCH_WAIT_MS


def test_consumers_of_background_work_poll_the_embedded_broker_less_often(broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, _env_file=None)
    assert consumer_config(settings, "g", background=True)["fetch.wait.max.ms"] == BACKGROUND_FETCH_WAIT_MS
    on_cluster = Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_fetch_wait_ms=KAFKA_FETCH_WAIT_MS,
                          _env_file=None)
    assert consumer_config(on_cluster, "g", background=True)["fetch.wait.max.ms"] == KAFKA_FETCH_WAIT_MS
