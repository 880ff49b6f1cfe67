"""Decodes a request's fMP4 chunks (H.264 + AAC, as the lip-sync processor writes them) for the WebRTC tracks.

Each chunk is one complete fragment (moof+mdat) starting with an IDR frame; a request's first chunk starts
with the init segment (ftyp+moov). A fragment is demuxed on its own (init segment + fragment), but decoded
with decoders that live as long as the request: the AAC decoder keeps its overlap between fragments, so
fragment boundaries are seamless.

The init segment's audio edit list hides the AAC encoder's priming samples. FFmpeg's demuxer applies it to
the first packet it reads, so it is applied to the first fragment only: applied to every fragment (each is
demuxed as if it began a file) it would cut a packet of real speech from each (measured: 1024 samples).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Protocol

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

from gateway.webrtc.playout import AUDIO_RATE, Pcm

_FRAGMENT_BOXES = (b"moof", b"styp", b"sidx", b"emsg")


class TimeBase(Protocol):
    """Fraction or PyAV 19's AVRational."""

    @property
    def numerator(self) -> int: ...

    @property
    def denominator(self) -> int: ...


class UndecodableChunk(ValueError):
    """The chunk cannot be decoded (no init segment seen for its request, or corrupt media)."""


def split_init_segment(data: bytes) -> tuple[bytes, bytes]:
    """(init segment, the rest): the top-level boxes before the first fragment box are the init segment."""
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind in _FRAGMENT_BOXES:
            break
        if size == 1 and position + 16 <= len(data):
            size = struct.unpack(">Q", data[position + 8:position + 16])[0]
        if size < 8:  # 0 means "to the end of the file": no fragment follows
            return data, b""
        position += size
    return data[:position], data[position:]


@dataclass
class Demuxed:
    """One chunk demuxed: its audio decoded, its video packets not yet."""

    audio: Pcm = field(default_factory=lambda: np.empty(0, np.int16))
    video_packets: list[av.Packet] = field(default_factory=list)


@dataclass
class Decoded:
    """One chunk's media: video frames at their time within the request, and the audio that follows on."""

    video: list[tuple[float, VideoFrame]] = field(default_factory=list)
    audio: Pcm = field(default_factory=lambda: np.empty(0, np.int16))


class RequestDecoder:
    """Decodes one request's chunks, given in seq order from the first, to video frames and 48 kHz mono audio."""

    def __init__(self) -> None:
        self.init_segment: bytes | None = None
        self._video: VideoCodecContext | None = None
        self._audio: AudioCodecContext | None = None
        self._resampler = AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)

    def decode(self, data: bytes, *, is_last: bool = False) -> Decoded:
        """The whole chunk at once: its video frames and its audio."""
        demuxed = self.demux(data, is_last=is_last)
        decoded = Decoded(audio=demuxed.audio)
        for packet in demuxed.video_packets:
            decoded.video += self.decode_video(packet)
        if is_last:
            decoded.video += self.decode_video(None)
        return decoded

    def demux(self, data: bytes, *, is_last: bool = False) -> Demuxed:
        """The chunk's audio, decoded (~1 ms), and its video packets, to decode one by one with decode_video:
        the first frame can go out before the chunk's last is decoded (10 frames of 512x512 take ~40 ms)."""
        init, fragment = split_init_segment(data)
        first = self.init_segment is None
        if first:
            if not init:
                raise UndecodableChunk("the request's first chunk (with the init segment) was not seen")
            self.init_segment = init
        assert self.init_segment is not None
        demuxed = Demuxed()
        audio: list[Pcm] = []
        options = {} if first else {"ignore_editlist": "1"}
        try:
            with av.open(io.BytesIO(self.init_segment + fragment), "r", format="mp4", options=options) as container:
                assert isinstance(container, InputContainer)
                self._open_decoders(container)
                for packet in container.demux():
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if packet.stream.type == "video":
                        demuxed.video_packets.append(packet)
                    elif packet.stream.type == "audio":
                        audio += self._decode_audio(packet)
            if is_last:
                audio += self._resampled(None)
        except av.FFmpegError as error:
            raise UndecodableChunk(f"corrupt chunk: {error}") from error
        if audio:
            demuxed.audio = np.concatenate(audio)
        return demuxed

    def decode_video(self, packet: av.Packet | None) -> list[tuple[float, VideoFrame]]:
        """The frames of one video packet (None: drain the decoder at the request's end)."""
        try:
            return self._decode_video(packet) if packet is not None else self._drain_video()
        except av.FFmpegError as error:
            raise UndecodableChunk(f"corrupt video: {error}") from error

    def _open_decoders(self, container: InputContainer) -> None:
        if self._video is None and container.streams.video:
            video_in = container.streams.video[0].codec_context
            video = av.CodecContext.create(video_in.name, "r")
            assert isinstance(video, VideoCodecContext)
            video.extradata = video_in.extradata
            video.thread_count = 1  # frame threading would hold frames back: latency
            self._video = video
        if self._audio is None and container.streams.audio:
            audio_in = container.streams.audio[0].codec_context
            audio = av.CodecContext.create(audio_in.name, "r")
            assert isinstance(audio, AudioCodecContext)
            audio.extradata = audio_in.extradata
            audio.sample_rate = audio_in.sample_rate
            audio.layout = audio_in.layout
            self._audio = audio

    def _decode_video(self, packet: av.Packet) -> list[tuple[float, VideoFrame]]:
        assert self._video is not None
        time_base = packet.time_base
        return [(_seconds(frame, time_base), frame) for frame in self._video.decode(packet)
                if isinstance(frame, VideoFrame)]

    def _drain_video(self) -> list[tuple[float, VideoFrame]]:
        if self._video is None:
            return []
        return [(_seconds(frame, frame.time_base), frame) for frame in self._video.decode(None)
                if isinstance(frame, VideoFrame) and frame.time_base is not None]

    def _decode_audio(self, packet: av.Packet) -> list[Pcm]:
        assert self._audio is not None
        pcm: list[Pcm] = []
        for frame in self._audio.decode(packet):
            if not isinstance(frame, AudioFrame) or frame.pts is None:
                continue
            # The encoder's priming samples sit before time 0 (the init segment's edit list says so): skip them.
            if frame.pts + frame.samples <= 0:
                continue
            if frame.pts < 0:
                frame = _trimmed(frame, -frame.pts)
            pcm += self._resampled(frame)
        return pcm

    def _resampled(self, frame: AudioFrame | None) -> list[Pcm]:
        return [out.to_ndarray().reshape(-1).astype(np.int16, copy=False) for out in self._resampler.resample(frame)]


def _seconds(frame: VideoFrame, time_base: TimeBase | None) -> float:
    if frame.pts is None or time_base is None:
        raise UndecodableChunk("a decoded frame has no timestamp")
    return frame.pts * time_base.numerator / time_base.denominator


def _trimmed(frame: AudioFrame, skip: int) -> AudioFrame:
    """The frame without its first ``skip`` samples; FFmpeg's AAC decoder gives planar float (fltp)."""
    if frame.format.name != "fltp":
        raise UndecodableChunk(f"unexpected decoded audio format {frame.format.name}")
    kept = np.ascontiguousarray(frame.to_ndarray()[:, skip:], dtype=np.float32)
    trimmed = AudioFrame.from_ndarray(kept, format="fltp", layout=frame.layout.name)
    trimmed.sample_rate = frame.sample_rate
    trimmed.pts = 0
    trimmed.time_base = frame.time_base
    return trimmed
