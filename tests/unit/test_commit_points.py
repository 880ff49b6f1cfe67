"""Offsets finished out of order are committed only up to the first one still in progress."""

from __future__ import annotations

from processors.common.offsets import CommitPoints


def test_in_order_finishes_commit_each_next_offset() -> None:
    points = CommitPoints()
    for offset in (5, 6):
        points.accepted(0, offset)
    assert points.finished(0, 5) == 6
    assert points.finished(0, 6) == 7


def test_a_later_offset_finishing_first_waits_for_the_earlier_one() -> None:
    points = CommitPoints()
    for offset in (10, 11, 12):
        points.accepted(3, offset)
    assert points.finished(3, 11) is None, "10 is still being rendered: committing 12 would skip it"
    assert points.finished(3, 10) == 12, "10 and 11 are done, 12 is not"
    assert points.finished(3, 12) == 13


def test_when_the_last_open_offset_finishes_the_commit_passes_everything_finished_before() -> None:
    points = CommitPoints()
    for offset in (0, 1, 2):
        points.accepted(0, offset)
    assert points.finished(0, 2) is None  # a short request of another session, done first
    assert points.finished(0, 0) == 1
    assert points.finished(0, 1) == 3, "2 finished long ago: committing 2 would redo it after a takeover"


def test_an_offset_never_finished_holds_the_commit_point_back() -> None:
    points = CommitPoints()
    for offset in (1, 2, 3):
        points.accepted(0, offset)
    assert points.finished(0, 2) is None and points.finished(0, 3) is None  # 1 was discarded when stopping
    assert points.open_count(0) == 1


def test_partitions_are_independent_and_revoked_ones_are_forgotten() -> None:
    points = CommitPoints()
    points.accepted(0, 7)
    points.accepted(1, 7)
    points.forget([0])
    assert points.finished(0, 7) is None and points.open_count(0) == 0
    assert points.finished(1, 7) == 8
