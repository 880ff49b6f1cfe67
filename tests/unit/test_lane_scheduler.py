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


def test_a_lane_whose_next_output_is_nearly_due_goes_before_new_work() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=0.2)
    scheduler.add("a", "a1")
    assert scheduler.next(now=0.0) == "a1"
    scheduler.set_due("a", 0.4)  # a's client runs out of video at 0.4 s
    scheduler.add("b", "b1")
    assert scheduler.next(now=0.1) == "b1", "not due yet: new work first"
    scheduler.add("c", "c1")
    assert scheduler.next(now=0.25) == "a1", "due within the urgency: before c's first step"
    scheduler.set_due("a", 0.9)
    assert scheduler.next(now=0.3) == "c1"


def test_due_lanes_go_earliest_due_first() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=0.2)
    for lane, due in (("a", 0.35), ("b", 0.3), ("c", 5.0)):
        scheduler.add(lane, f"{lane}1")
        scheduler.next(now=0.0)
        scheduler.set_due(lane, due)
    assert [scheduler.next(now=0.2)] == ["b1"]
    scheduler.set_due("b", None)
    assert scheduler.next(now=0.2) == "a1"


def test_new_work_past_its_own_due_is_not_put_off_behind_busy_lanes_for_ever() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=0.2)
    scheduler.add("a", "a1")
    scheduler.next(now=0.0)
    scheduler.set_due("a", 0.1)
    scheduler.add("b", "b1", due=0.5)
    assert scheduler.next(now=0.05) == "a1"
    scheduler.set_due("a", 0.6)  # a is always nearly due: an overloaded worker
    assert scheduler.next(now=0.45) == "b1", "b's first output was due at 0.5, before a's next"


def _late_chunks_in_a_burst(urgency_s: float, known_cost: bool = False) -> tuple[list[tuple[str, int]], float]:
    """Eight requests arrive at once; a chunk takes 50 ms to render, a first chunk plays 0.4 s, the others
    0.48 s. Returns the (session, seq) sent after the client ran out of video, and the last first chunk's time."""
    render_s, first_s, chunk_s = 0.05, 0.4, 0.48
    scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=urgency_s)
    if known_cost:
        scheduler.set_step_cost(render_s)
    for session in range(8):
        scheduler.add(f"s{session}", f"s{session}", due=1.0)
    now = 0.0
    started: dict[str, float] = {}
    sent: dict[str, int] = {}
    late: list[tuple[str, int]] = []
    while (job := scheduler.next(now)) is not None:
        now += render_s
        count = sent.get(job, 0)
        if count and now > started[job] + first_s + (count - 1) * chunk_s:
            late.append((job, count))
        started.setdefault(job, now)
        sent[job] = count + 1
        if sent[job] == 4:
            scheduler.finish(job)
        else:
            scheduler.set_due(job, started[job] + first_s + (sent[job] - 1) * chunk_s)
    return late, max(started.values())


def test_a_burst_of_new_sessions_does_not_freeze_the_first_sessions_video() -> None:
    late, last_first_chunk = _late_chunks_in_a_burst(urgency_s=0.2)
    assert late == [] and last_first_chunk < 1.0


def test_without_due_lanes_first_the_same_burst_freezes_the_first_session() -> None:
    # New work first, then strict turns: all eight first chunks, then the second chunks in turn, and the
    # sessions that started later run out of video before theirs.
    late, _ = _late_chunks_in_a_burst(urgency_s=float("-inf"))
    assert {seq for _, seq in late} == {1} and len(late) >= 2


def test_a_shared_step_takes_in_the_started_lanes_due_by_its_horizon_earliest_first() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=0.2)
    for lane, due in (("a", 0.3), ("b", 0.9), ("c", 0.1), ("d", None)):
        scheduler.add(lane, f"{lane}1")
        scheduler.next(now=0.0)
        scheduler.set_due(lane, due)
    scheduler.add("e", "e1", due=0.05)  # new work: never a companion, its first step is its own
    assert scheduler.due_by(0.5, besides="a") == ["c1"]
    assert scheduler.due_by(1.0, besides="a") == ["c1", "b1"]
    assert scheduler.due_by(1.0, besides="c") == ["a1", "b1"]


def test_a_lane_stepped_in_another_lanes_shared_step_takes_its_next_turn_last() -> None:
    scheduler: LaneScheduler[str, str] = LaneScheduler()
    for lane in "abc":
        scheduler.add(lane, f"{lane}1")
        scheduler.next()
    assert scheduler.next() == "a1"
    scheduler.had_turn("b")  # b's chunk was rendered with a's
    assert [scheduler.next(), scheduler.next(), scheduler.next()] == ["c1", "a1", "b1"]


def test_due_lanes_bunched_together_go_before_new_work_when_their_steps_would_push_one_late() -> None:
    def scheduler_at(cost: float) -> LaneScheduler[str, str]:
        scheduler: LaneScheduler[str, str] = LaneScheduler(urgency_s=0.2)
        for lane, due in (("a", 0.35), ("b", 0.4), ("c", 0.45)):
            scheduler.add(lane, f"{lane}1")
            scheduler.next(now=0.0)
            scheduler.set_due(lane, due)
        scheduler.set_step_cost(cost)
        scheduler.add("n", "n1", due=0.5)
        return scheduler

    # None is due within 0.2 s; at 50 ms a step, c is still served 0.35 s before its due: new work first.
    assert scheduler_at(0.05).next(now=0.0) == "n1"
    # At 0.1 s a step, a and b take until 0.2 s, leaving c 0.25 s... and at 0.14 s, only 0.17 s: a goes now.
    assert scheduler_at(0.1).next(now=0.0) == "n1"
    assert scheduler_at(0.14).next(now=0.0) == "a1"


def test_the_burst_keeps_every_video_running_with_the_step_cost_known() -> None:
    late, last_first_chunk = _late_chunks_in_a_burst(urgency_s=0.2, known_cost=True)
    assert late == [] and last_first_chunk < 1.0
