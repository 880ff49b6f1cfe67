"""The processors' work order: one job per lane (session) at a time, busy lanes taking turns, new work first."""

from __future__ import annotations

from processors.common.scheduling import LaneScheduler


def run(scheduler: LaneScheduler[str, str], steps: dict[str, int]) -> list[str]:
    """Advance jobs until none is left; ``steps`` says how many steps each job takes. Returns the step order."""
    order: list[str] = []
    remaining = dict(steps)
    while (job := scheduler.next()) is not None:
        order.append(job)
        remaining[job] -= 1
        if remaining[job] == 0:
            scheduler.finish(job[0])  # jobs are named "<lane><n>"
    return order


def test_a_lanes_jobs_run_one_after_another_in_arrival_order() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    for job in ("a1", "a2", "a3"):
        scheduler.add("a", job)
    assert run(scheduler, {"a1": 2, "a2": 1, "a3": 2}) == ["a1", "a1", "a2", "a3", "a3"]


def test_busy_lanes_take_turns_one_step_each() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    scheduler.add("a", "a1")
    scheduler.add("b", "b1")
    assert run(scheduler, {"a1": 3, "b1": 3}) == ["a1", "b1", "a1", "b1", "a1", "b1"]


def test_a_new_job_takes_its_first_step_before_the_long_running_ones_continue() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    scheduler.add("a", "a1")
    scheduler.add("b", "b1")
    assert [scheduler.next(), scheduler.next(), scheduler.next()] == ["a1", "b1", "a1"]
    scheduler.add("c", "c1")  # a new request arrives while two long sentences are being rendered
    assert scheduler.next() == "c1"
    assert [scheduler.next(), scheduler.next(), scheduler.next()] == ["b1", "a1", "c1"]


def test_a_lanes_next_job_also_goes_first_when_its_predecessor_finishes() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    scheduler.add("a", "a1")
    scheduler.add("a", "a2")
    scheduler.add("b", "b1")
    assert [scheduler.next(), scheduler.next()] == ["a1", "b1"]
    scheduler.finish("a")
    assert scheduler.next() == "a2"


def test_handing_lanes_over_forgets_only_their_waiting_jobs() -> None:
    scheduler: LaneScheduler[tuple[int, str], str] = LaneScheduler()
    for lane, job in (((0, "s1"), "x"), ((0, "s1"), "y"), ((0, "s2"), "z"), ((1, "s3"), "w"), ((1, "s3"), "v")):
        scheduler.add(lane, job)
    assert scheduler.waiting((0, "s1")) == 1
    assert scheduler.discard_waiting(lambda lane: lane[0] == 0) == ["y"]  # partition 0 revoked
    assert scheduler.has_active(lambda lane: lane[0] == 0), "x and z are finished before the hand-over"
    assert scheduler.waiting((0, "s1")) == 0 and scheduler.waiting((1, "s3")) == 1


def test_stopping_keeps_the_started_jobs_and_forgets_the_waiting_ones() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    for lane, job in (("a", "a1"), ("a", "a2"), ("b", "b1")):
        scheduler.add(lane, job)
    assert scheduler.discard_waiting() == ["a2"]
    assert run(scheduler, {"a1": 1, "b1": 1}) == ["a1", "b1"] and not scheduler.busy


def test_finishing_a_lane_without_an_active_job_changes_nothing() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    scheduler.finish("a")
    assert scheduler.next() is None and not scheduler.busy
