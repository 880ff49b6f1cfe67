"""Shared fixtures: a real embedded Kafka-protocol broker and a real, throw-away PostgreSQL database."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from infra.broker import EmbeddedBroker, free_port
from infra.migrations import throwaway_database
from infra.settings import Settings
from tests.integration.stack import TEST_FACE_DATA_KEYS, RunningStack, start_stack, stop_stack
from tests.registration_worker import worker_process

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# The embedded broker answers a consumer's first JoinGroup only after half its session timeout (3 s at the default
# 6 s; measured): every consumer group a test starts, in-process or in a service the test launches (they inherit
# the environment), would wait that long. 2 s keeps the join at 1 s and a killed member's partitions move sooner.
os.environ.setdefault("KAFKA_SESSION_TIMEOUT_MS", "2000")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(free_port()).start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database per test run, migrated; dropped afterwards."""
    with throwaway_database("avatar_test", embedded_dir="test-pg") as url:
        yield url


@pytest.fixture(scope="session")
def stack(broker: EmbeddedBroker, database_url: str) -> Iterator[RunningStack]:
    """The whole service started as `make run` starts it, shared by the integration and browser tests."""
    running = start_stack(broker.bootstrap, database_url, free_port())
    yield running
    assert stop_stack(running) == 0, "Ctrl-C must stop every service cleanly"


@pytest.fixture(scope="session")
def settings(broker: EmbeddedBroker, database_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, port=free_port(),
                    log_level="WARNING")


@pytest.fixture(scope="session")
def registration_worker(broker: EmbeddedBroker, database_url: str) -> Iterator[None]:
    """A registration worker process for the gateways the tests serve in-process (the stack runs its own, in the
    same consumer group on the same database and keys, so either may take any job). A process, not a thread: the
    test process then holds no Kafka client threads for the whole session."""
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, log_level="WARNING",
                        face_data_keys=SecretStr(TEST_FACE_DATA_KEYS), _env_file=None)
    with worker_process(settings):
        yield
