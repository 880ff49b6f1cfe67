"""Shared steps: one runner call resolves every piece; a failing piece fails alone; nothing is read unresolved."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from processors.common.batching import Shared, run_shared


def doubler(calls: list[list[int]]) -> Callable[[Sequence[int]], list[int]]:
    def run(works: Sequence[int]) -> list[int]:
        calls.append(list(works))
        if 13 in works:
            raise ValueError("unlucky")
        return [2 * work for work in works]
    return run


def test_one_call_resolves_every_piece_in_order() -> None:
    calls: list[list[int]] = []
    pieces = [Shared(n) for n in (1, 2, 3)]
    run_shared(doubler(calls), pieces)
    assert calls == [[1, 2, 3]]
    assert [piece.result() for piece in pieces] == [2, 4, 6]


def test_a_failing_piece_fails_alone_and_the_others_are_rendered_one_by_one() -> None:
    calls: list[list[int]] = []
    pieces = [Shared(n) for n in (1, 13, 3)]
    run_shared(doubler(calls), pieces)
    assert calls == [[1, 13, 3], [1], [13], [3]]
    assert pieces[0].result() == 2 and pieces[2].result() == 6
    with pytest.raises(ValueError, match="unlucky"):
        pieces[1].result()


def test_a_runner_that_loses_results_fails_the_pieces_rather_than_misassigning_them() -> None:
    pieces = [Shared(n) for n in (1, 2)]
    run_shared(lambda works: list(works)[:-1], pieces)
    for piece in pieces:
        with pytest.raises(RuntimeError, match="0 results for 1 pieces"):
            piece.result()


def test_reading_a_piece_before_the_app_ran_it_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before the app ran"):
        Shared(1).result()
