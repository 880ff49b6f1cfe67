"""Scores one rendered clip against its phone timings: the five figures a viewer's eye checks.

Every figure is a contrast, so no output that ignores the timings can max it:

* bilabial closure: a p/b/m counts when its middle frame is closed *and* the mouth is seen parted
  within ``PARTED_WITHIN_S`` of it (a mouth that never opens is "closed" on every bilabial). Not
  "parted at the neighbouring vowel": dlib reads a close vowel's few millimetres (i, e) as closed, so
  in "fātemeh mimānand" no neighbour of the m's reads parted however well the mouth moves;
* rounding: mean width on rounded vowels over mean width on spread ones (a still mouth scores 1);
* labiodental: the lower lip at the f/v's middle frame is higher than at the more open neighbouring
  vowel by the calibrated raise (a still mouth never raises it), *and* it rests at the upper teeth: dlib
  reads the inner lips a little apart (the teeth show: above ``closed``, where on an m they meet) but no
  more than a tuck (at most ``tucked``). A mouth that shuts on every consonant fails it, and so does one
  that follows the loudness (less open on an f than on its vowels, but open);
* silence: pause frames at rest, scored only when the mouth speaks at all (opens on at least
  ``SPEAKS_SHARE`` of the open vowels), since a mouth that never opens "rests" in every pause;
* timing: the lag of best alignment with the truth opening (``timing``), with the correlation there;
  a still mouth correlates with nothing and fails.

Thresholds come from ``calibration`` (see ``Thresholds``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scripts.lipsync_quality.landmarks import LipTrack
from scripts.lipsync_quality.phonetics import VOWEL_CLASSES, Phone, Phonetic
from scripts.lipsync_quality.timing import LagCurve, lag_curve

NEIGHBOUR_S = 0.3  # a vowel this close to a consonant's edge is its neighbour (about a syllable)
PARTED_WITHIN_S = 0.4  # about a syllable either side of a bilabial's middle
SPEAKS_SHARE = 0.5
PAUSE_GUARD_S = 0.08  # pause frames this close to speech are transitions (release, anticipation), not rest

TARGET_BILABIAL = 0.9
TARGET_ROUNDING = 0.85
TARGET_LABIODENTAL = 0.7
TARGET_SILENCE = 0.95
# ITU-R BT.1359-1: detectability thresholds +45 ms (sound before picture) to -125 ms (sound after
# picture). A picture late by more than 45 ms, or early by more than 125 ms, is detectable.
MAX_PICTURE_LATE_S = 0.045
MAX_PICTURE_EARLY_S = 0.125
MIN_TIMING_CORRELATION = 0.5


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds in inter-ocular distances, from ``calibration`` (the derivation is there)."""

    closed: float  # opening at or below: the lips meet (also: at rest)
    parted: float  # opening at or above: visibly parted
    raised: float  # lower lip this much higher than at the neighbouring vowels: raised to the teeth
    tucked: float  # opening at or below, above ``closed``: the lower lip at the upper teeth, which show


@dataclass
class Tally:
    """Hits out of judged cases, summed over clips."""

    hits: int = 0
    judged: int = 0

    def add(self, hit: bool) -> None:
        self.hits += int(hit)
        self.judged += 1

    def merge(self, other: Tally) -> None:
        self.hits += other.hits
        self.judged += other.judged

    @property
    def share(self) -> float:
        return self.hits / self.judged if self.judged else math.nan


@dataclass
class ClipScore:
    """Every count a table needs; clips are merged by summing, not by averaging shares."""

    bilabial: Tally = field(default_factory=Tally)
    labiodental: Tally = field(default_factory=Tally)
    open_vowels: Tally = field(default_factory=Tally)  # open vowels whose middle frame is parted
    pause_frames: Tally = field(default_factory=Tally)
    rounded_widths: list[float] = field(default_factory=list)
    spread_widths: list[float] = field(default_factory=list)
    lags: list[LagCurve] = field(default_factory=list)
    unknown_phones: int = 0

    def merge(self, other: ClipScore) -> None:
        for name in ("bilabial", "labiodental", "open_vowels", "pause_frames"):
            getattr(self, name).merge(getattr(other, name))
        self.rounded_widths += other.rounded_widths
        self.spread_widths += other.spread_widths
        self.lags += other.lags
        self.unknown_phones += other.unknown_phones

    @property
    def rounding(self) -> float:
        if not self.rounded_widths or not self.spread_widths:
            return math.nan
        return float(np.mean(self.rounded_widths) / np.mean(self.spread_widths))

    @property
    def speaks(self) -> bool:
        return self.open_vowels.share >= SPEAKS_SHARE

    @property
    def silence(self) -> float:
        """Share of pause frames at rest; 0 for a mouth that does not open when it speaks."""
        return self.pause_frames.share if self.speaks else 0.0


def frame_at(seconds: float, fps: float, n_frames: int) -> int:
    """The frame whose middle is nearest the moment ``seconds`` (frame k covers [k/fps, (k+1)/fps))."""
    return min(max(round(seconds * fps - 0.5), 0), n_frames - 1)


def neighbour_vowels(phones: Sequence[Phone], index: int) -> list[Phone]:
    """The nearest vowel before and after phone ``index`` within ``NEIGHBOUR_S`` of its edges."""
    found: list[Phone] = []
    phone = phones[index]
    for step, edge in ((-1, phone.start), (1, phone.end)):
        other = index + step
        while 0 <= other < len(phones):
            candidate = phones[other]
            gap = edge - candidate.end if step < 0 else candidate.start - edge
            if gap > NEIGHBOUR_S:
                break
            if candidate.kind in VOWEL_CLASSES:
                found.append(candidate)
                break
            other += step
    return found


def score_clip(
    track: LipTrack,
    phones: Sequence[Phone],
    silences: Sequence[tuple[float, float]],
    fps: float,
    thresholds: Thresholds,
) -> ClipScore:
    """All figures of one clip whose frame 0 starts at the phones' time 0."""
    score = ClipScore()
    n = len(track)
    if n == 0:
        return score

    def at(seconds: float) -> int:
        return frame_at(seconds, fps, n)

    for index, phone in enumerate(phones):
        middle = at(phone.middle)
        if phone.kind is Phonetic.OTHER:
            score.unknown_phones += 1
        elif phone.kind is Phonetic.BILABIAL:
            nearby = track.opening[at(phone.middle - PARTED_WITHIN_S) : at(phone.middle + PARTED_WITHIN_S) + 1]
            parted = bool(nearby.max() >= thresholds.parted)
            score.bilabial.add(bool(track.opening[middle] <= thresholds.closed) and parted)
        elif phone.kind is Phonetic.LABIODENTAL:
            neighbours = neighbour_vowels(phones, index)
            if neighbours:  # an f/v with no vowel near has nothing to be raised against
                # Against the more open neighbour: the lip rises from the vowel beside it (next to a close
                # vowel like i the lip is already high, and the movement shows on the other side).
                around = max(float(track.lower_lip[at(v.middle)]) for v in neighbours)
                raised = around - float(track.lower_lip[middle]) >= thresholds.raised
                tucked = thresholds.closed < float(track.opening[middle]) <= thresholds.tucked
                score.labiodental.add(raised and tucked)
        elif phone.kind is Phonetic.OPEN_VOWEL:
            score.open_vowels.add(bool(track.opening[middle] >= thresholds.parted))
        if phone.kind is Phonetic.ROUNDED:
            score.rounded_widths.append(float(track.width[middle]))
        elif phone.kind is Phonetic.SPREAD:
            score.spread_widths.append(float(track.width[middle]))
    for start, end in silences:
        first = math.ceil((start + PAUSE_GUARD_S) * fps)
        last = math.floor((end - PAUSE_GUARD_S) * fps) - 1  # the frame must end inside the pause
        for frame in range(max(first, 0), min(last + 1, n)):
            score.pause_frames.add(bool(track.opening[frame] <= thresholds.closed))
    score.lags.append(lag_curve(track.opening, phones, n / fps, fps))
    return score


def timing_passes(lag: float, correlation: float) -> bool:
    return correlation >= MIN_TIMING_CORRELATION and -MAX_PICTURE_EARLY_S <= lag <= MAX_PICTURE_LATE_S
