"""Decodes a request's fragmented-MP4 chunks, as they arrive, into video frames each with the audio it shows.

For clients that present raw frames instead of playing MP4 (a pipecat or LiveKit transport): each chunk is
demuxed with the request's init segment, its packets decoded by one decoder per track kept across chunks
(so AAC's overlapping frames join without a click), and the audio is cut on the video's clock: frame ``k``
gets the samples ``[k, k + 1) * rate / fps``. A frame is given out only once its audio is complete (the
writer's AAC runs up to two AAC frames behind its video), the rest at the request's last chunk. A client that
holds the audio itself (it sent it: the pipecat service) asks for the images alone (``with_audio=False``),
each given out as soon as it is decoded; ``pixel_format`` is any of PyAV's (``rgb24``, ``rgba`` for LiveKit, ...).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext

RgbFrame = npt.NDArray[np.uint8]
Pcm16 = npt.NDArray[np.int16]


@dataclass(frozen=True)
class AvFrame:
    """One video frame of a request and its audio (``rate / fps`` samples of PCM16 mono)."""

    index: int  # frame number within the request
    image: RgbFrame  # (height, width, channels) in the decoder's pixel format: RGB unless asked otherwise
    audio: Pcm16
    sample_rate: int


def split_init_segment(chunk: bytes) -> tuple[bytes, bytes]:
    """(the init segment: the boxes before the first ``moof``, the rest) of a request's first chunk."""
    offset = 0
    while offset + 8 <= len(chunk):
        size, kind = struct.unpack_from(">I4s", chunk, offset)
        if kind == b"moof":
            return chunk[:offset], chunk[offset:]
        if size < 8:
            break
        offset += size
    return chunk, b""


class Fmp4FrameDecoder:
    """One request's chunks in ``seq`` order → its ``AvFrame``s, each as soon as its audio is decoded."""

    def __init__(self, fps: int = 25, *, with_audio: bool = True, pixel_format: str = "rgb24") -> None:
        self.fps = fps
        self.with_audio = with_audio
        self.pixel_format = pixel_format
        self._init: bytes | None = None
        self._video: VideoCodecContext | None = None
        self._audio: AudioCodecContext | None = None
        self.sample_rate = 0
        self._images: list[RgbFrame] = []  # decoded frames not given out yet
        self._next_frame = 0  # index of _images[0]
        self._pcm = np.zeros(0, np.int16)  # decoded audio from the start of _next_frame's slice
        self._samples_before = 0  # request samples before _pcm[0]

    def feed(self, chunk: bytes, *, is_last: bool = False) -> list[AvFrame]:
        """The frames this chunk completes (with ``is_last``: every frame left, silence-padded if need be)."""
        if self._init is None:
            self._init, chunk = split_init_segment(chunk)
        if chunk:
            self._decode(self._init + chunk)
        if is_last:
            self._flush_decoders()
        return self._complete_frames(pad=is_last)

    def _decode(self, data: bytes) -> None:
        with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            self._open_decoders(video, audio)
            assert self._video is not None and self._audio is not None
            for packet in container.demux(video, audio):
                if packet.size == 0:
                    continue
                if packet.stream.type == "video":
                    for frame in self._video.decode(packet):
                        self._images.append(np.asarray(frame.to_ndarray(format=self.pixel_format), dtype=np.uint8))
                elif self.with_audio:
                    # A bare copy: the demuxer marks packets by its edit list (skip and discard side data) as
                    # if each chunk were the whole track, and the decoder would drop real audio for it.
                    bare = av.Packet(bytes(packet))
                    bare.pts, bare.dts, bare.time_base = packet.pts, packet.dts, packet.time_base
                    for sound in self._audio.decode(bare):
                        self._add_audio(sound, packet.time_base)

    def _open_decoders(self, video: av.VideoStream, audio: av.AudioStream) -> None:
        if self._video is not None:
            return
        self._video = av.CodecContext.create(video.codec_context.name, "r")  # type: ignore[assignment]
        self._video.extradata = video.codec_context.extradata  # type: ignore[union-attr]
        self._audio = av.CodecContext.create(audio.codec_context.name, "r")  # type: ignore[assignment]
        self._audio.extradata = audio.codec_context.extradata  # type: ignore[union-attr]
        self._audio.sample_rate = audio.codec_context.sample_rate  # type: ignore[union-attr]
        self._audio.layout = audio.codec_context.layout  # type: ignore[union-attr]
        self.sample_rate = audio.codec_context.sample_rate

    def _add_audio(self, sound: av.AudioFrame, time_base: object) -> None:
        samples = sound.to_ndarray().reshape(sound.samples, -1).mean(axis=1) if sound.format.is_packed else (
            sound.to_ndarray().mean(axis=0))
        pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16) if samples.dtype.kind == "f" \
            else samples.astype(np.int16)
        start = round(float(sound.pts or 0) * float(time_base) * self.sample_rate)  # type: ignore[arg-type]
        end = self._samples_before + len(self._pcm)
        if start + len(pcm) <= end:
            return  # the encoder's warm-up before the timeline's start (the edit list hides it on playback)
        pcm = pcm[max(0, end - start) :]
        if start > end:  # a gap the stream does not fill: silence keeps the clock
            pcm = np.concatenate([np.zeros(start - end, np.int16), pcm])
        self._pcm = np.concatenate([self._pcm, pcm])

    def _flush_decoders(self) -> None:
        if self._video is not None:
            for frame in self._video.decode(None):
                self._images.append(np.asarray(frame.to_ndarray(format=self.pixel_format), dtype=np.uint8))

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
            self._samples_before += per_frame
            self._next_frame += 1
        return done
