"""A session's decoded media placed on one clock, queued for the WebRTC tracks, and flushed on interrupt.

Pure: no sockets, no codecs, no wall clock. Callers pass ``now`` (seconds on the session's clock, the same
clock the tracks pace against) and get back what to send next.

The timeline: a request is placed when its first media arrives, at ``now + lead`` or right after everything
placed before it, whichever is later; within it, a video frame sits at the chunk's ``pts_ms`` plus its index
at the video rate, and audio runs on, sample after sample, from the request's start. Video and audio of a
request share its base, so they stay in sync whatever the network does. Audio that arrives too late for its
place pushes the rest of its request, audio and video, later by as much (a stall, never a jump out of
sync); a late frame is sent at once and the next keep their time. A chunk's audio is queued before its
frames (peers.py), so its lateness moves the base before the frames are placed.

Audio never pauses: the audio track sends a 20 ms block every 20 ms, silence where nothing is queued, as a
microphone would. Measured: with gaps in the audio stream, aiortc's Opus path stamps the first packet after
a gap as if no gap had been (its resampler counts samples), Chromium's jitter buffer reads that as a packet
seconds late and grows its delay with every utterance (0.17 s to 1.1 s over five), and the video waits for
the audio to stay in sync. Video may pause: a frame carries its own timestamp.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

AUDIO_RATE = 48_000  # the Opus clock aiortc encodes at
AUDIO_BLOCK = 960  # 20 ms: the frame aiortc's Opus encoder packs
VIDEO_CLOCK = 90_000  # the RTP video clock

Pcm = npt.NDArray[np.int16]


@dataclass
class _Placed:
    """Where a request sits on the clock and how much of its audio is queued so far."""

    base_s: float
    audio_samples: int = 0  # samples of this request's audio placed so far


@dataclass
class _AudioRun:
    """Contiguous audio of one request starting at ``start`` (a sample index on the session clock)."""

    request_id: str
    start: int
    pcm: Pcm

    @property
    def end(self) -> int:
        return self.start + len(self.pcm)


@dataclass(frozen=True)
class VideoDue:
    """A frame to send now, with its presentation time on the session clock."""

    at_s: float
    frame: object
    request_id: str
    skipped: int  # older frames that came due at the same time and were dropped (late)

    @property
    def pts(self) -> int:
        return round(self.at_s * VIDEO_CLOCK)


@dataclass(frozen=True)
class AudioBlock:
    """20 ms of audio starting at sample ``start`` of the session clock; silence fills what is missing."""

    start: int
    pcm: Pcm
    silent: bool  # nothing was queued for it

    @property
    def release_s(self) -> float:
        """When the track hands it to aiortc: when the clock reaches its start."""
        return self.start / AUDIO_RATE


@dataclass
class Playout[Frame]:
    """The queues of one WebRTC peer. ``lead_s``: how far ahead of now a newly arriving request starts.

    ``skip_late``: a late frame is dropped when a newer one is due too (decoded frames, re-encoded by
    aiortc); off for H.264 passed through, where every frame but an IDR refers to the one before it.
    """

    lead_s: float = 0.0
    fps: int = 25
    skip_late: bool = True
    max_stopped: int = 1024
    _placed: OrderedDict[str, _Placed] = field(default_factory=OrderedDict)
    _stopped: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _video: list[tuple[float, str, Frame]] = field(default_factory=list)  # sorted by time
    _audio: list[_AudioRun] = field(default_factory=list)  # sorted by start, never overlapping
    _end_s: float = 0.0  # where everything placed so far ends
    _cursor: int | None = None  # the next sample the audio track sends; set by its first block

    # --- filling -------------------------------------------------------------------------------------------

    def add_video(self, request_id: str, rel_s: float, frame: Frame, now: float) -> bool:
        """Queue a frame at ``rel_s`` into its request; False (dropped) if the request was stopped."""
        if request_id in self._stopped:
            return False
        placed = self._place(request_id, now)
        at = placed.base_s + rel_s  # late: sent at once (and skipped if a newer one is due too), in sync
        index = len(self._video)
        while index > 0 and self._video[index - 1][0] > at:
            index -= 1
        self._video.insert(index, (at, request_id, frame))
        self._end_s = max(self._end_s, at + 1 / self.fps)
        return True

    def add_audio(self, request_id: str, pcm: Pcm, now: float) -> bool:
        """Queue the next ``pcm`` (int16 mono at 48 kHz) of a request's audio; False if it was stopped."""
        if request_id in self._stopped:
            return False
        if len(pcm) == 0:
            return True
        placed = self._place(request_id, now)
        at = self._on_time(placed, placed.audio_samples / AUDIO_RATE, now)
        start = round(at * AUDIO_RATE)
        if self._cursor is not None:
            start = max(start, self._cursor)  # never behind what the track already sent
        last = self._audio[-1] if self._audio else None
        if last is not None and last.request_id == request_id and last.end == start:
            last.pcm = np.concatenate([last.pcm, pcm])
        else:
            if last is not None:
                start = max(start, last.end)
            self._audio.append(_AudioRun(request_id, start, pcm.astype(np.int16, copy=False)))
        placed.audio_samples += len(pcm)
        self._end_s = max(self._end_s, (start + len(pcm)) / AUDIO_RATE)
        return True

    def _place(self, request_id: str, now: float) -> _Placed:
        placed = self._placed.get(request_id)
        if placed is None:
            placed = _Placed(base_s=max(now + self.lead_s, self._end_s))
            self._placed[request_id] = placed
            while len(self._placed) > self.max_stopped:
                self._placed.popitem(last=False)
        return placed

    @staticmethod
    def _on_time(placed: _Placed, rel_s: float, now: float) -> float:
        at = placed.base_s + rel_s
        if at < now:  # late: the rest of the request moves by as much, audio and video together
            placed.base_s += now - at
            at = now
        return at

    # --- draining ------------------------------------------------------------------------------------------

    def next_video_at(self) -> float | None:
        return self._video[0][0] if self._video else None

    def due_video(self, now: float) -> VideoDue | None:
        """The latest frame due at ``now``; frames due before it are dropped (they are late), unless
        ``skip_late`` is off: then the oldest due, the others next."""
        due = 0
        while due < len(self._video) and self._video[due][0] <= now:
            due += 1
            if not self.skip_late:
                break
        if due == 0:
            return None
        at, request_id, frame = self._video[due - 1]
        del self._video[:due]
        return VideoDue(at, frame, request_id, skipped=due - 1)

    def next_audio(self, now: float) -> AudioBlock:
        """The block the audio track sends next (not yet taken): from where the last one ended, or from
        ``now`` for the first; queued audio where there is some, silence elsewhere."""
        if self._cursor is None:
            self._cursor = round(now * AUDIO_RATE)
        cursor = self._cursor
        self._audio = [run for run in self._audio if run.end > cursor]
        pcm, silent = self._block_from(cursor)
        return AudioBlock(cursor, pcm, silent)

    def take_audio(self, block: AudioBlock) -> None:
        """The track sent ``block``: move the cursor past it."""
        self._cursor = block.start + AUDIO_BLOCK

    def _block_from(self, start: int) -> tuple[Pcm, bool]:
        """AUDIO_BLOCK samples from ``start``: queued audio where there is some (across runs), silence elsewhere;
        and whether it is silence only."""
        block = np.zeros(AUDIO_BLOCK, np.int16)
        silent = True
        for run in self._audio:
            if run.start >= start + AUDIO_BLOCK:
                break
            lo, hi = max(start, run.start), min(start + AUDIO_BLOCK, run.end)
            if lo < hi:
                block[lo - start:hi - start] = run.pcm[lo - run.start:hi - run.start]
                silent = False
        return block, silent

    # --- interrupting --------------------------------------------------------------------------------------

    def flush(self, request_ids: Iterable[str] | None = None) -> int:
        """Drop the queued media of ``request_ids`` (None: of every request) and refuse any that comes later.

        Returns how many frames and audio runs were dropped. The next request starts at once, not after the
        flushed ones would have ended.
        """
        stopped = set(self._placed) if request_ids is None else set(request_ids)
        for request_id in stopped:
            self._stopped[request_id] = None
            self._stopped.move_to_end(request_id)
            self._placed.pop(request_id, None)
        while len(self._stopped) > self.max_stopped:
            self._stopped.popitem(last=False)
        before = len(self._video) + len(self._audio)
        self._video = [item for item in self._video if item[1] not in stopped]
        self._audio = [run for run in self._audio if run.request_id not in stopped]
        ends = [at + 1 / self.fps for at, _, _ in self._video] + [run.end / AUDIO_RATE for run in self._audio]
        self._end_s = max(ends, default=0.0)
        return before - len(self._video) - len(self._audio)

    @property
    def queued_s(self) -> float:
        """How far ahead of the audio cursor media is queued (seconds)."""
        cursor = (self._cursor or 0) / AUDIO_RATE
        return max(0.0, self._end_s - cursor)

    def is_stopped(self, request_id: str) -> bool:
        return request_id in self._stopped
