"""Retrying an operation while PostgreSQL is away: with backoff until it answers, for a bounded time only."""

from __future__ import annotations

import psycopg
import pytest

from infra.database import RETRY_FIRST_WAIT_S, RETRY_MAX_WAIT_S, retry_while_unavailable


class Flaky:
    """Fails with the error a lost connection raises ``failures`` times, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or psycopg.OperationalError("connection refused")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "stored"


def test_an_operation_is_tried_again_with_growing_waits_until_the_database_answers() -> None:
    waits: list[float] = []
    beats: list[int] = []
    operation = Flaky(failures=8)
    result = retry_while_unavailable(operation, what="store", give_up_after_s=600, sleep=waits.append,
                                     while_waiting=lambda: beats.append(1))
    assert result == "stored" and operation.calls == 9 and len(beats) == 8
    assert waits[0] == RETRY_FIRST_WAIT_S and waits == sorted(waits) and max(waits) == RETRY_MAX_WAIT_S


def test_past_the_bound_the_last_error_is_raised() -> None:
    with pytest.raises(psycopg.OperationalError, match="connection refused"):
        retry_while_unavailable(Flaky(failures=10**6), what="store", give_up_after_s=0.5)


def test_an_error_that_is_not_the_database_being_away_is_raised_at_once() -> None:
    operation = Flaky(failures=1, error=psycopg.errors.UniqueViolation("duplicate key"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        retry_while_unavailable(operation, what="store", give_up_after_s=600, sleep=lambda _s: None)
    assert operation.calls == 1
