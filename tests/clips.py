"""Test helper: the video the registration fault tests analyse, encoded once per test run."""

from __future__ import annotations

import functools

from scripts.benchmark_registration import panning_clip

# Long enough that a test can stop a worker or the database mid-analysis (over 100 frames analysed).
MID_JOB_CLIP_S = 6.0


@functools.cache
def mid_job_clip() -> bytes:
    """The 720p panning clip of MID_JOB_CLIP_S seconds (H.264 encoding it takes seconds of a core: done once)."""
    return panning_clip(seconds=MID_JOB_CLIP_S)
