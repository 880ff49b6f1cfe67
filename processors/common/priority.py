"""Lowers a thread's CPU priority, for a processor's background work (idle clips, a registration's analysis)."""

from __future__ import annotations

import contextlib
import os
import threading

# Added to the nice value: the background work is wanted soon, the live chunks of every session now.
BACKGROUND_NICENESS = 10


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Make the calling thread (and the threads it starts afterwards) yield the CPU to everything else.

    On Linux a thread's nice value is its own (setpriority on its thread id), and raising it needs no privilege.
    """
    with contextlib.suppress(OSError):  # not permitted here: work at normal priority rather than not at all
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, os.getpriority(os.PRIO_PROCESS, thread_id) + niceness))
