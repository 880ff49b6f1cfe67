"""Decodes a request's fragmented-MP4 chunks, as they arrive, into video frames and the audio on their clock.

The one fMP4 decoder of the project: the gateway's WebRTC output (its audio, and its video when the browser
takes no H.264) and the pipecat and LiveKit clients (``integrations/avatar_link.py``) all decode here. The
chunks are demuxed by ``consumers/fmp4_demux.py`` (no FFmpeg demuxer: no per-chunk container to open, and
no edit list re-applied to every fragment as if each began the file), and the samples decoded by one
decoder per track that lives as long as the request, so AAC's overlapping frames join across chunks
without a click.

``MediaDecoder`` gives the raw results: video frames at their time in the request, and mono PCM16 at the
track's rate from the request's time 0 on (the encoder's priming, which the edit list hides, is cut; a gap
the stream leaves is filled with silence). ``Fmp4FrameDecoder`` cuts that audio on the video's clock for
clients that present raw frames: frame ``k`` gets the samples ``[k, k + 1) * rate / fps``, and is given out
only once its audio is complete (the writer's AAC runs up to two AAC frames behind its video), the rest at
the request's last chunk. A client that holds the audio itself (the pipecat service) asks for the images
alone (``with_audio=False``), each given out as soon as it is decoded; ``pixel_format`` is any of PyAV's
(``rgb24``, ``rgba`` for LiveKit, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

from consumers.fmp4_demux import AudioTrack, Fmp4Error, RequestDemuxer, Sample, VideoTrack, split_init_segment

RgbFrame = npt.NDArray[np.uint8]
Pcm16 = npt.NDArray[np.int16]

__all__ = ["AvFrame", "Fmp4FrameDecoder", "MediaDecoder", "UndecodableChunk", "split_init_segment"]


class UndecodableChunk(ValueError):
    """The chunk cannot be decoded (no init segment seen for its request, or corrupt media)."""


@dataclass(frozen=True)
class AvFrame:
    """One video frame of a request and its audio (``rate / fps`` samples of PCM16 mono)."""

    index: int  # frame number within the request
    image: RgbFrame  # (height, width, channels) in the decoder's pixel format: RGB unless asked otherwise
    audio: Pcm16
    sample_rate: int


@dataclass
class Demuxed:
    """One chunk's samples, split by track."""

    video: list[Sample]
    audio: list[Sample]


class MediaDecoder:
    """One request's chunks, in ``seq`` order from the first: demuxed, then decoded sample by sample."""

    def __init__(self) -> None:
        self.demuxer = RequestDemuxer()
        self._video: VideoCodecContext | None = None
        self._audio: AudioCodecContext | None = None
        self._audio_end = 0  # samples of the request's audio produced so far (from time 0, priming cut)

    @property
    def video_track(self) -> VideoTrack | None:
        return self.demuxer.tracks.video if self.demuxer.tracks else None

    @property
    def audio_track(self) -> AudioTrack | None:
        return self.demuxer.tracks.audio if self.demuxer.tracks else None

    def demux(self, chunk: bytes) -> Demuxed:
        """The chunk's samples (the first chunk must carry the init segment); ~0.1 ms, nothing decoded."""
        try:
            samples = self.demuxer.feed(chunk)
        except Fmp4Error as error:
            raise UndecodableChunk(str(error)) from error
        video, audio = self.video_track, self.audio_track
        return Demuxed([s for s in samples if video is not None and s.track_id == video.track_id],
                       [s for s in samples if audio is not None and s.track_id == audio.track_id])

    def decode_video(self, sample: Sample | None) -> list[tuple[float, VideoFrame]]:
        """The frames (with their seconds in the request) of one video sample; None drains the decoder."""
        track = self.video_track
        if track is None:
            return []
        if self._video is None:
            if sample is None:
                return []
            self._video = _video_decoder(track)
        packet: av.Packet | None = None
        if sample is not None:
            packet = av.Packet(sample.data)
            packet.pts = packet.dts = sample.decode_time + sample.composition_offset
            packet.time_base = Fraction(1, track.timescale)
        try:
            frames = self._video.decode(packet)
        except av.FFmpegError as error:
            raise UndecodableChunk(f"corrupt video: {error}") from error
        return [(frame.pts / track.timescale, frame) for frame in frames
                if isinstance(frame, VideoFrame) and frame.pts is not None]

    def decode_audio(self, samples: list[Sample]) -> Pcm16:
        """The audio of these samples (in order), mono PCM16 at the track's rate, continuing the request's."""
        track = self.audio_track
        if track is None or not samples:
            return np.zeros(0, np.int16)
        if self._audio is None:
            self._audio = _audio_decoder(track)
        pieces: list[Pcm16] = []
        for sample in samples:
            packet = av.Packet(sample.data)
            packet.pts = packet.dts = sample.decode_time
            packet.time_base = Fraction(1, track.timescale)
            try:
                frames = self._audio.decode(packet)
            except av.FFmpegError as error:
                raise UndecodableChunk(f"corrupt audio: {error}") from error
            # FFmpeg's AAC decoder gives one frame per packet, at once: it covers the packet's own time.
            start = (sample.decode_time - track.priming) * track.sample_rate // track.timescale
            for frame in frames:
                if isinstance(frame, AudioFrame):
                    pieces.append(self._placed(_mono16(frame), start))
                    start += frame.samples
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int16)

    def _placed(self, pcm: Pcm16, start: int) -> Pcm16:
        """``pcm`` starting at request sample ``start``, cut or padded to continue what was produced so far."""
        end = self._audio_end
        if start + len(pcm) <= end:
            return np.zeros(0, np.int16)  # before time 0 (the priming), or already produced
        pcm = pcm[max(0, end - start):]
        if start > end:  # a gap the stream does not fill: silence keeps the clock
            pcm = np.concatenate([np.zeros(start - end, np.int16), pcm])
        self._audio_end += len(pcm)
        return pcm


def _video_decoder(track: VideoTrack) -> VideoCodecContext:
    context = av.CodecContext.create("h264", "r")
    assert isinstance(context, VideoCodecContext)
    context.extradata = track.avcc
    context.thread_count = 1  # frame threading would hold frames back: latency
    return context


def _audio_decoder(track: AudioTrack) -> AudioCodecContext:
    context = av.CodecContext.create("aac", "r")
    assert isinstance(context, AudioCodecContext)
    context.extradata = track.config
    context.sample_rate = track.sample_rate
    context.layout = "mono" if track.channels <= 1 else "stereo"
    return context


def _mono16(frame: AudioFrame) -> Pcm16:
    """The frame as mono PCM16 (channels averaged); FFmpeg's AAC decoder gives planar float."""
    samples = frame.to_ndarray()
    samples = samples.reshape(frame.samples, -1).mean(axis=1) if frame.format.is_packed else samples.mean(axis=0)
    if samples.dtype.kind == "f":
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    return samples.astype(np.int16)


class Fmp4FrameDecoder:
    """One request's chunks in ``seq`` order → its ``AvFrame``s, each as soon as its audio is decoded."""

    def __init__(self, fps: int = 25, *, with_audio: bool = True, pixel_format: str = "rgb24") -> None:
        self.fps = fps
        self.with_audio = with_audio
        self.pixel_format = pixel_format
        self._media = MediaDecoder()
        self._images: list[RgbFrame] = []  # decoded frames not given out yet
        self._next_frame = 0  # index of _images[0]
        self._pcm = np.zeros(0, np.int16)  # decoded audio from the start of _next_frame's slice

    @property
    def sample_rate(self) -> int:
        track = self._media.audio_track
        return track.sample_rate if track is not None else 0

    def feed(self, chunk: bytes, *, is_last: bool = False) -> list[AvFrame]:
        """The frames this chunk completes (with ``is_last``: every frame left, silence-padded if need be)."""
        demuxed = self._media.demux(chunk)
        for sample in [*demuxed.video, *([None] if is_last else [])]:
            for _, frame in self._media.decode_video(sample):
                self._images.append(np.asarray(frame.to_ndarray(format=self.pixel_format), dtype=np.uint8))
        if self.with_audio:
            self._pcm = np.concatenate([self._pcm, self._media.decode_audio(demuxed.audio)])
        return self._complete_frames(pad=is_last)

    def _complete_frames(self, *, pad: bool) -> list[AvFrame]:
        if not self.with_audio:
            images = [AvFrame(self._next_frame + i, image, np.zeros(0, np.int16), self.sample_rate)
                      for i, image in enumerate(self._images)]
            self._next_frame += len(images)
            self._images.clear()
            return images
        if not self.sample_rate:
            return []
        per_frame = self.sample_rate // self.fps
        done: list[AvFrame] = []
        while self._images and (len(self._pcm) >= per_frame or pad):
            audio = self._pcm[:per_frame]
            if len(audio) < per_frame:
                audio = np.concatenate([audio, np.zeros(per_frame - len(audio), np.int16)])
            done.append(AvFrame(self._next_frame, self._images.pop(0), audio, self.sample_rate))
            self._pcm = self._pcm[per_frame:]
            self._next_frame += 1
        return done
