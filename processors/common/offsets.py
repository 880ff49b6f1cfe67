"""Which offset of a partition may be committed when its messages finish out of order (sessions take turns)."""

from __future__ import annotations


class CommitPoints:
    """Per partition, the offsets accepted but not finished. A commit names the first offset not yet finished:
    everything before it is done, so a worker taking the partition over redoes nothing that finished below it
    (and what finished above it is recognised as done when it comes again)."""

    def __init__(self) -> None:
        self._open: dict[int, list[int]] = {}  # ascending: offsets arrive in order
        self._last: dict[int, int] = {}  # the latest offset accepted

    def accepted(self, partition: int, offset: int) -> None:
        self._open.setdefault(partition, []).append(offset)
        self._last[partition] = offset

    def finished(self, partition: int, offset: int) -> int | None:
        """Record ``offset`` done; the offset to commit now, or None if the commit point did not move."""
        pending = self._open.get(partition, [])
        if offset not in pending:
            return None
        was_first = pending[0] == offset
        pending.remove(offset)
        if not was_first:
            return None  # an earlier message is still in progress (or was never finished)
        return pending[0] if pending else self._last[partition] + 1  # all accepted are done

    def open_count(self, partition: int) -> int:
        """Messages of the partition accepted and not finished."""
        return len(self._open.get(partition, []))

    def forget(self, partitions: list[int]) -> None:
        """The partitions were revoked: their open offsets are someone else's now."""
        for partition in partitions:
            self._open.pop(partition, None)
            self._last.pop(partition, None)
