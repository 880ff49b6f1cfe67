"""The lip-sync's fMP4 chunks made into what the WebRTC tracks send (gateway/webrtc/media.py)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from av.video.frame import VideoFrame

from consumers.fmp4_demux import split_init_segment
from gateway.webrtc.media import RequestMedia, UndecodableChunk, VideoItem
from gateway.webrtc.playout import AUDIO_RATE, VIDEO_CLOCK
from processors.lipsync.media.encoder import FragmentedMp4Writer

SPEECH_RATE = 16000


def request_chunks(seconds: float = 1.0) -> list[bytes]:
    """A request's chunks: 10 frames first, then 12 a chunk, then the writer's final flush (audio only)."""
    writer = FragmentedMp4Writer(64, 64, fps=25, audio_rate=SPEECH_RATE)
    frames = round(seconds * 25)
    t = np.arange(round(seconds * SPEECH_RATE)) / SPEECH_RATE
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    chunks, start = [], 0
    for count in [10] + [12] * ((frames - 10) // 12 + 1):
        end = min(frames, start + count)
        if end <= start:
            break
        video = [np.full((64, 64, 3), (i * 9) % 255, np.uint8) for i in range(start, end)]
        chunks.append(writer.write(video, pcm[start * SPEECH_RATE // 25:end * SPEECH_RATE // 25]))
        start = end
    chunks.append(writer.close())
    return chunks


def played(media: RequestMedia, chunks: list[bytes]) -> tuple[list[tuple[float, VideoItem]], np.ndarray]:
    """(every video item with its seconds in the request, all the 48 kHz audio) of a request's chunks."""
    items: list[tuple[float, VideoItem]] = []
    audio = []
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        demuxed = media.demux(chunk, is_last=last)
        audio.append(demuxed.audio)
        for sample in [*demuxed.video, *([None] if last else [])]:
            items += media.video(sample)
    return items, np.concatenate(audio)


def test_passed_through_h264_is_one_packet_per_frame_on_the_90_khz_clock_and_survives_aiortcs_rtp() -> None:
    chunks = request_chunks(1.0)
    items, _ = played(RequestMedia(passthrough=True), chunks)
    assert [at for at, _ in items] == pytest.approx([i * 0.04 for i in range(25)])
    packets = [item for _, item in items if isinstance(item, av.Packet)]
    assert len(packets) == 25 and all(p.time_base == Fraction(1, VIDEO_CLOCK) for p in packets)
    assert [p.pts for p in packets] == [i * VIDEO_CLOCK // 25 for i in range(25)]
    # Through aiortc's H.264 packetiser (what its RTCRtpSender does with a packet) and back: the frames decode.
    encoder, decoder = H264Encoder(), av.CodecContext.create("h264", "r")
    frames = 0
    for packet in packets:
        payloads, timestamp = encoder.pack(packet)
        assert timestamp == packet.pts
        access_unit = b"".join(h264_depayload(payload) for payload in payloads)
        frames += len(decoder.decode(av.Packet(access_unit)))
    frames += len(decoder.decode(None))
    assert frames == 25


def test_decoded_frames_for_vp8_come_at_the_chunk_timeline_and_the_audio_adds_up_at_48_khz() -> None:
    items, audio = played(RequestMedia(passthrough=False), request_chunks(1.0))
    assert all(isinstance(frame, VideoFrame) for _, frame in items)
    assert [at for at, _ in items] == pytest.approx([i * 0.04 for i in range(25)])
    assert audio.dtype == np.int16
    samples = len(audio)
    # Every AAC packet once (1024 samples each, the last padded), none lost at a fragment boundary and the
    # encoder's priming packet not played: 16 packets of 1024 at 16 kHz.
    assert samples == 16 * 1024 * AUDIO_RATE // SPEECH_RATE


def test_the_decoded_speech_is_the_tone_that_was_encoded() -> None:
    _, audio = played(RequestMedia(passthrough=True), request_chunks(1.0))
    spectrum = np.abs(np.fft.rfft(audio[: AUDIO_RATE // 2].astype(np.float64)))
    assert np.argmax(spectrum) * 2 == pytest.approx(220, abs=4), "the 220 Hz tone (bins of 2 Hz)"


def test_a_request_joined_after_its_first_chunk_and_a_corrupt_chunk_are_refused() -> None:
    chunks = request_chunks()
    with pytest.raises(UndecodableChunk, match="first chunk"):
        RequestMedia(passthrough=True).demux(chunks[1])
    _, first_fragment = split_init_segment(chunks[0])
    with pytest.raises(UndecodableChunk):
        RequestMedia(passthrough=True).demux(b"\x00\x00\x00\x10ftypjunkjunk" + b"\x00\x00\x00\x0cjunkjunk"
                                             + first_fragment)
    media = RequestMedia(passthrough=False)
    media.demux(chunks[0])
    broken = media.demux(b"\x00\x00\x00\x10moof" + bytes(200))  # a fragment with no readable sample
    assert broken.video == [] and len(broken.audio) == 0
