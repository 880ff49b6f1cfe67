"""An agent's own speech (PCM16LE mono) as ``avatar.speech`` segments: checked, re-chunked, with a 16 kHz copy.

Audio that comes with no text bypasses the TTS: the gateway (WebSocket and REST) and the SDK cut it into
speech segments (schema v3, no ``phonemes``, so the lip-sync processor estimates the mouth shapes from the
sound) and produce them straight onto the speech topic. ``Utterance`` is the pure part: bytes in, segments out.

* **Whole video frames.** A segment holds whole 40 ms frames (the partial frame at the end of a chunk waits
  for the next chunk), so the lip-sync renders every frame of a segment at once, never carries half a frame,
  and its 16 kHz copy is exactly 640 samples a frame. A segment leaves as soon as ``MIN_SEGMENT_FRAMES``
  whole frames are in (a client's 100 ms chunk becomes one segment at once; 20 ms chunks are gathered into
  80 ms so that a Kafka message and an MP4 fragment are not spent per 20 ms), and holds at most
  ``MAX_SEGMENT_FRAMES`` (a long message is split, so no Kafka message grows with the message's length).
* **Leading silence is not sent.** The utterance starts one frame before its first audible frame: an
  agent's TTS often begins with silence that would only delay the moving mouth, and audio that never gets
  audible is refused at its end (``silent_audio``) instead of rendering a still face.
* **The 16 kHz copy** (schema v2's ``lipsync_pcm16``) is resampled with an anti-aliasing filter, each
  segment with the frame before it as context, so the lip-sync never interpolates 48 kHz audio linearly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from math import gcd

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from schemas.common import Language
from schemas.speech import SpeechSegment, SpeechSegmentMeta

SUPPORTED_RATES = (16_000, 22_050, 24_000, 48_000)
SAMPLE_FORMAT = "pcm_s16le"
LIPSYNC_RATE = 16_000
FPS = 25
MIN_SEGMENT_FRAMES = 2  # 80 ms: below this a message's overhead outweighs the latency it saves
MAX_SEGMENT_FRAMES = 50  # 2 s: bounds one Kafka message (2 s at 48 kHz with its copy: ~256 kB)
# A frame is audible when a sample reaches -50 dBFS (as the TTS's trim counts silence): quieter is
# digital silence, dither or a muted microphone, not speech.
AUDIBLE_PEAK = round(32768 * 10 ** (-50 / 20))

Pcm16 = npt.NDArray[np.int16]


class AudioError(ValueError):
    """Audio that cannot be spoken: a stable error code and a sentence for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_format(sample_rate: int, sample_format: str = SAMPLE_FORMAT, channels: int = 1) -> None:
    """Refuse what this service cannot take: only PCM16LE mono at SUPPORTED_RATES."""
    if sample_format != SAMPLE_FORMAT or channels != 1:
        raise AudioError("unsupported_sample_format", f"audio must be {SAMPLE_FORMAT} mono; got {sample_format!r} "
                                                      f"with {channels} channel(s)")
    if sample_rate not in SUPPORTED_RATES:
        raise AudioError("unsupported_sample_rate", f"sample_rate {sample_rate} is not supported; use one of "
                                                    f"{', '.join(map(str, SUPPORTED_RATES))}")


def pcm16_samples(data: bytes) -> Pcm16:
    """Little-endian int16 samples of ``data``; an odd byte count is no PCM16."""
    if len(data) % 2:
        raise AudioError("odd_byte_count", f"PCM16 audio has 2 bytes a sample; got {len(data)} bytes (an odd count)")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def to_lipsync_rate(context: Pcm16, audio: Pcm16, rate: int) -> Pcm16:
    """``audio`` at 16 kHz, filtered with ``context`` (one frame heard before it) so segments join smoothly.

    Both are whole frames, and a frame is 640 samples at 16 kHz whatever the rate, so the slice is exact.
    """
    if rate == LIPSYNC_RATE:
        return audio
    divisor = gcd(rate, LIPSYNC_RATE)
    joined = np.concatenate([context, audio]).astype(np.float32)
    # The newest samples have no future yet: extended as a line (not zeros), the filter does not dip at the seam.
    resampled = resample_poly(joined, LIPSYNC_RATE // divisor, rate // divisor, padtype="line")
    start = len(context) * LIPSYNC_RATE // rate
    out = resampled[start : start + len(audio) * LIPSYNC_RATE // rate]
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class UtteranceTarget:
    """Whose utterance it is and where its video goes: the fields every one of its segments repeats."""

    request_id: str
    session_id: str
    avatar_id: str
    sample_rate: int
    language: Language = "fa"  # a label only: the lip-sync reads the sound, not the language
    text: str = ""  # a subtitle, if the agent knows what it says (on the first chunk)
    created_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class Utterance:
    """One utterance's audio as it arrives → its speech segments, in order, the last one marked.

    ``add`` takes any number of samples and returns the segments now complete; ``end`` returns the rest
    (the last segment, padded to a whole frame, ``is_last``). ``max_samples`` bounds the whole utterance.
    """

    def __init__(self, target: UtteranceTarget, *, max_samples: int) -> None:
        check_format(target.sample_rate)
        self.target = target
        self.max_samples = max_samples
        self.frame = target.sample_rate // FPS
        self.received = 0  # samples taken, trimmed leading silence included
        self.audible = False
        self.ended = False
        self._pending = np.zeros(0, np.int16)  # taken, not in a segment yet (after the first audible frame)
        self._lead = np.zeros(0, np.int16)  # the silence heard so far: its last frame becomes the margin
        self._sent = 0  # samples in segments so far (the next segment's start_sample)
        self._index = 0
        self._context = np.zeros(self.frame, np.int16)  # the frame before the next segment, for resampling

    @property
    def sent_samples(self) -> int:
        return self._sent

    def add(self, pcm: Pcm16) -> list[SpeechSegment]:
        """Take more audio; the segments that are complete now (maybe none)."""
        self._take(pcm)
        return self._segments(final=False)

    def end(self, pcm: Pcm16 | None = None) -> list[SpeechSegment]:
        """The utterance is over (with ``pcm`` as its last audio): the rest as the last segment(s)."""
        if pcm is not None:
            self._take(pcm)
        self.ended = True
        if self.received == 0:
            raise AudioError("no_audio", "audio_end without audio: send audio_input first")
        if not self.audible:
            raise AudioError("silent_audio", "the audio is silent (no sample above -50 dBFS): nothing to lip-sync")
        padded = -(-len(self._pending) // self.frame) * self.frame
        self._pending = np.concatenate([self._pending, np.zeros(padded - len(self._pending), np.int16)])
        return self._segments(final=True)

    def _take(self, pcm: Pcm16) -> None:
        if self.ended:
            raise AudioError("utterance_ended", "this utterance has ended; start a new one")
        if self.received + len(pcm) > self.max_samples:
            limit_s = self.max_samples / self.target.sample_rate
            raise AudioError("audio_too_long", f"the utterance would exceed {limit_s:g} s of audio "
                                               f"(AUDIO_MAX_UTTERANCE_S); end it and start another")
        self.received += len(pcm)
        if not self.audible:
            pcm = self._after_leading_silence(pcm)
        self._pending = np.concatenate([self._pending, pcm])

    def _after_leading_silence(self, pcm: Pcm16) -> Pcm16:
        """Drop silence before the first audible frame, keeping one frame of it as a margin (soft onsets)."""
        lead = np.concatenate([self._lead, pcm])
        loud = np.flatnonzero(np.abs(lead.astype(np.int32)) >= AUDIBLE_PEAK)
        if len(loud) == 0:
            self._lead = lead[-self.frame :]
            return np.zeros(0, np.int16)
        self.audible = True
        self._lead = np.zeros(0, np.int16)
        return lead[max(0, int(loud[0]) - self.frame) :]

    def _segments(self, *, final: bool) -> list[SpeechSegment]:
        segments: list[SpeechSegment] = []
        while True:
            frames = min(len(self._pending) // self.frame, MAX_SEGMENT_FRAMES)
            if frames < MIN_SEGMENT_FRAMES and not (final and frames > 0):
                break
            take = frames * self.frame
            last = final and take == len(self._pending)
            segments.append(self._segment(self._pending[:take], is_last=last))
            self._pending = self._pending[take:]
        if final and (not segments or not segments[-1].meta.is_last):
            segments.append(self._segment(np.zeros(0, np.int16), is_last=True))  # nothing left: an empty end
        return segments

    def _segment(self, pcm: Pcm16, *, is_last: bool) -> SpeechSegment:
        target, rate = self.target, self.target.sample_rate
        lipsync = to_lipsync_rate(self._context, pcm, rate)
        own_copy = rate != LIPSYNC_RATE  # at 16 kHz the playback audio is the lip-sync audio
        meta = SpeechSegmentMeta(
            request_id=target.request_id, session_id=target.session_id, avatar_id=target.avatar_id,
            segment_index=self._index, is_last=is_last, text=target.text if self._index == 0 else "", spoken="",
            language=target.language, sample_rate=rate, sample_count=len(pcm), start_ms=self._sent * 1000 // rate,
            start_sample=self._sent, created_at_ms=target.created_at_ms,
            lipsync_sample_rate=LIPSYNC_RATE if own_copy else None,
            lipsync_sample_count=len(lipsync) if own_copy else 0)
        if len(pcm):
            self._context = np.concatenate([self._context, pcm])[-self.frame :]
        self._index += 1
        self._sent += len(pcm)
        return SpeechSegment(meta, pcm.astype("<i2").tobytes(), lipsync.astype("<i2").tobytes() if own_copy else b"")


def check_utterance(pcm: Pcm16, sample_rate: int, *, max_samples: int) -> None:
    """Refuse a whole utterance as ``Utterance`` would, without cutting it into segments."""
    check_format(sample_rate)
    if len(pcm) == 0:
        raise AudioError("no_audio", "the audio holds no samples")
    if len(pcm) > max_samples:
        raise AudioError("audio_too_long", f"the audio is longer than {max_samples / sample_rate:g} s "
                                           "(AUDIO_MAX_UTTERANCE_S)")
    if not np.any(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK):
        raise AudioError("silent_audio", "the audio is silent (no sample above -50 dBFS): nothing to lip-sync")


def whole_utterance(target: UtteranceTarget, pcm: Pcm16, *, max_samples: int) -> list[SpeechSegment]:
    """Every segment of audio that is complete already (a file, an SDK call)."""
    return Utterance(target, max_samples=max_samples).end(pcm)
