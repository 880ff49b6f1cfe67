"""Which consumed message a processor works on next: one at a time per lane (a session), lanes taking turns.

A lip-sync worker renders a request chunk by chunk. Handled strictly one message after another, a session's
first chunk would wait behind every sentence already queued for other sessions (seconds, with a few sessions
talking at once). Here each lane (the processors use partition and message key, i.e. one session) has at most
one message in progress, so a session's messages keep their order; busy lanes take turns one output at a time,
and a message that has produced nothing yet goes first: a new request's first chunk waits for at most one chunk
of each other busy session.

Unless a lane is due. A lane can say when its next output must be out (``set_due``: for a lip-sync session,
when the chunk the client is playing runs out); new work goes first only if every due lane, served earliest
first one step each (``set_step_cost``), still has ``urgency_s`` before its deadline; otherwise the earliest
due goes now. When many requests start at once, their first chunks would otherwise all go before the second
chunk of the session that started first, and its video would freeze: a first chunk a chunk's render later is
the smaller harm.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class _Lane[J]:
    active: J  # a lane exists only while it has a job in progress
    waiting: deque[J] = field(default_factory=deque)
    due: float | None = None  # when its next output must be out (the clock of next()'s ``now``)


class LaneScheduler[L: Hashable, J]:
    """Jobs by lane. ``next()`` names the job to advance by one step; ``finish()`` retires a lane's active job."""

    def __init__(self, urgency_s: float = 0.2) -> None:
        self.urgency_s = urgency_s
        self.step_cost_s = 0.0  # what one step is expected to take (set_step_cost)
        self._lanes: dict[L, _Lane[J]] = {}
        self._turns: deque[L] = deque()  # lanes with an active job, in turn order
        self._fresh: deque[L] = deque()  # lanes whose active job has not been stepped yet

    def add(self, lane: L, job: J, due: float | None = None) -> None:
        """Queue ``job`` behind the lane's others; it starts at once if the lane is idle. ``due`` is when an
        idle lane's first output must be out, so new work is not put off for ever behind due lanes."""
        state = self._lanes.get(lane)
        if state is None:
            self._lanes[lane] = _Lane(job, due=due)
            self._turns.append(lane)
            self._fresh.append(lane)
        else:
            state.waiting.append(job)

    def set_due(self, lane: L, due: float | None) -> None:
        """The lane's next output must be out by ``due`` (None: no deadline); forgotten with the lane."""
        state = self._lanes.get(lane)
        if state is not None:
            state.due = due

    def set_step_cost(self, seconds: float) -> None:
        """What one step is expected to take (the app's running mean): the deadline check charges it per step."""
        self.step_cost_s = max(0.0, seconds)

    def next(self, now: float = 0.0) -> J | None:
        """The job to advance at ``now``, or None when there is no work.

        New work first, then busy lanes in turn, unless that would make a lane late: a lane due within
        ``urgency_s`` goes first, and so does the earliest due lane when several are due so close together that
        their steps (``set_step_cost`` each) would push a later one within ``urgency_s`` of its deadline."""
        if self._fresh:
            lane = self._fresh[0]
        elif self._turns:
            lane = self._turns[0]
        else:
            return None
        if not self._keeps_deadlines(lane, now):
            lane = self._earliest_due()
        self._forget_turn(lane)
        self._turns.append(lane)  # its next turn comes after every other busy lane's
        return self._lanes[lane].active

    def _keeps_deadlines(self, first: L, now: float) -> bool:
        """Whether, after ``first``'s step, each due lane still has ``urgency_s`` once the due lanes before it
        (earliest first) have had their steps: for one due lane, "not due within ``urgency_s``"."""
        ahead = now
        for due, _lane in self._by_due(besides=first):
            if due - ahead < self.urgency_s:
                return False
            ahead += self.step_cost_s
        return True

    def _earliest_due(self) -> L:
        return self._by_due()[0][1]

    def due_by(self, before: float, besides: L) -> list[J]:
        """The started jobs of lanes other than ``besides`` whose next output is due by ``before``, earliest first:
        candidates to join ``besides``'s step in a shared (batched) step (``had_turn`` for those that do)."""
        return [self._lanes[lane].active for due, lane in self._by_due(besides=besides)
                if due <= before and lane not in self._fresh]

    def _by_due(self, besides: L | None = None) -> list[tuple[float, L]]:
        """(due, lane) of every lane with a deadline but ``besides``, earliest first."""
        return sorted(((state.due, lane) for lane, state in self._lanes.items()
                       if lane != besides and state.due is not None), key=lambda pair: pair[0])

    def had_turn(self, lane: L) -> None:
        """The lane was stepped outside ``next()`` (in another lane's shared step): its next turn comes last."""
        if lane in self._lanes:
            self._forget_turn(lane)
            self._turns.append(lane)

    def finish(self, lane: L) -> None:
        """The lane's active job is done; its next waiting job (if any) becomes active."""
        state = self._lanes.get(lane)
        if state is None:
            return
        self._forget_turn(lane)
        if state.waiting:
            state.active = state.waiting.popleft()
            self._turns.append(lane)
            self._fresh.append(lane)
        else:
            del self._lanes[lane]

    def discard_waiting(self, which: Callable[[L], bool] = lambda _lane: True) -> list[J]:
        """Forget the jobs not started yet of the lanes ``which`` picks (all by default); returns them.

        For stopping or handing partitions over: the started jobs are finished, these are left to the next owner.
        """
        discarded: list[J] = []
        for lane, state in self._lanes.items():
            if which(lane):
                discarded += state.waiting
                state.waiting.clear()
        return discarded

    def has_active(self, which: Callable[[L], bool]) -> bool:
        """Whether a lane ``which`` picks has a job in progress."""
        return any(which(lane) for lane in self._lanes)

    def waiting(self, lane: L) -> int:
        """How many jobs of the lane wait behind its active one."""
        state = self._lanes.get(lane)
        return len(state.waiting) if state is not None else 0

    @property
    def busy(self) -> bool:
        return bool(self._turns)

    def _forget_turn(self, lane: L) -> None:
        for order in (self._turns, self._fresh):
            if lane in order:
                order.remove(lane)
