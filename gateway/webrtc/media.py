"""A request's fMP4 chunks turned into what a WebRTC peer's tracks send: H.264 access units, or frames, and audio.

With H.264 negotiated (``passthrough``) the lip-sync's own H.264 goes to the browser as it is: each video
sample becomes one Annex B access unit (SPS and PPS before each IDR, every chunk starts with one), an
``av.Packet`` that aiortc's H.264 packetiser splits into RTP without decoding; nothing is decoded or
re-encoded. Only when the browser offers no H.264 are the samples decoded to frames for aiortc to re-encode
(VP8). Audio is always decoded (AAC) and resampled to 48 kHz mono PCM16 for the Opus track. The demuxing
and decoding are consumers/fmp4_frames.py's, shared with the pipecat and LiveKit clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.video.frame import VideoFrame

from consumers.fmp4_demux import Sample, annex_b
from consumers.fmp4_frames import MediaDecoder, UndecodableChunk
from gateway.webrtc.playout import AUDIO_RATE, VIDEO_CLOCK, Pcm

__all__ = ["ChunkMedia", "RequestMedia", "UndecodableChunk", "VideoItem"]

VideoItem = av.Packet | VideoFrame


@dataclass
class ChunkMedia:
    """One chunk: its audio, decoded at 48 kHz, and its video samples, not yet turned into items."""

    audio: Pcm = field(default_factory=lambda: np.zeros(0, np.int16))
    video: list[Sample] = field(default_factory=list)


class RequestMedia:
    """One request's chunks, given in seq order from the first, for one peer."""

    def __init__(self, *, passthrough: bool) -> None:
        self.passthrough = passthrough
        self._decoder = MediaDecoder()
        self._resampler: AudioResampler | None = None

    def demux(self, chunk: bytes, *, is_last: bool = False) -> ChunkMedia:
        """The chunk's audio (decoded and resampled, ~1 ms) and its video samples."""
        demuxed = self._decoder.demux(chunk)
        pcm = self._decoder.decode_audio(demuxed.audio)
        return ChunkMedia(self._resampled(pcm, flush=is_last), demuxed.video)

    def video(self, sample: Sample | None) -> list[tuple[float, VideoItem]]:
        """What the video track sends for one sample (None: the request's end), at its seconds in the request.

        Pass-through: the sample itself as one Annex B packet (microseconds). Otherwise its decoded frames
        (~4 ms each at 512x512), and with None the frames the decoder still holds."""
        if not self.passthrough:
            return list(self._decoder.decode_video(sample))
        track = self._decoder.video_track
        if sample is None or track is None:
            return []
        packet = av.Packet(annex_b(sample, track))
        seconds = self._decoder.demuxer.seconds(sample)
        packet.pts = packet.dts = round(seconds * VIDEO_CLOCK)
        packet.time_base = Fraction(1, VIDEO_CLOCK)
        return [(seconds, packet)]

    def _resampled(self, pcm: Pcm, *, flush: bool) -> Pcm:
        track = self._decoder.audio_track
        if track is None or (not len(pcm) and not flush):
            return np.zeros(0, np.int16)
        if self._resampler is None:
            self._resampler = AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        frames: list[AudioFrame | None] = []
        if len(pcm):
            frame = AudioFrame.from_ndarray(np.ascontiguousarray(pcm.reshape(1, -1)), format="s16", layout="mono")
            frame.sample_rate = track.sample_rate
            frames.append(frame)
        if flush:
            frames.append(None)  # the resampler's last few samples
        out = [o.to_ndarray().reshape(-1).astype(np.int16, copy=False)
               for f in frames for o in self._resampler.resample(f)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)
