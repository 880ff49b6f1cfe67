"""fMP4 chunks as the lip-sync processor writes them, decoded for WebRTC (gateway/webrtc/decoding.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.webrtc.decoding import RequestDecoder, UndecodableChunk, split_init_segment
from gateway.webrtc.playout import AUDIO_RATE
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


def test_the_init_segment_is_split_from_the_first_fragment() -> None:
    first = request_chunks()[0]
    init, rest = split_init_segment(first)
    assert init[4:8] == b"ftyp" and b"moov" in init and rest[4:8] == b"moof"
    assert split_init_segment(rest) == (b"", rest)


def test_frames_come_at_the_chunk_timeline_and_the_audio_adds_up_to_the_request_at_48_khz() -> None:
    decoder = RequestDecoder()
    chunks = request_chunks(1.0)
    times: list[float] = []
    samples = 0
    for index, chunk in enumerate(chunks):
        decoded = decoder.decode(chunk, is_last=index == len(chunks) - 1)
        times += [at for at, _ in decoded.video]
        samples += len(decoded.audio)
        assert decoded.audio.dtype == np.int16
    assert times == pytest.approx([i * 0.04 for i in range(25)])
    # Every AAC packet once (1024 samples each, the last padded), none lost at a fragment boundary and the
    # encoder's priming packet not played: 16 packets of 1024 at 16 kHz.
    assert samples == 16 * 1024 * AUDIO_RATE // SPEECH_RATE


def test_the_decoded_speech_is_the_tone_that_was_encoded() -> None:
    decoder = RequestDecoder()
    chunks = request_chunks(1.0)
    audio = np.concatenate([decoder.decode(c, is_last=i == len(chunks) - 1).audio for i, c in enumerate(chunks)])
    spectrum = np.abs(np.fft.rfft(audio[: AUDIO_RATE // 2].astype(np.float64)))
    assert np.argmax(spectrum) * 2 == pytest.approx(220, abs=4), "the 220 Hz tone (bins of 2 Hz)"


def test_a_request_joined_after_its_first_chunk_and_a_corrupt_chunk_are_refused() -> None:
    chunks = request_chunks()
    with pytest.raises(UndecodableChunk):
        RequestDecoder().decode(chunks[1])
    _, first_fragment = split_init_segment(chunks[0])
    with pytest.raises(UndecodableChunk):
        RequestDecoder().decode(b"\x00\x00\x00\x10ftypjunkjunk" + b"\x00\x00\x00\x0cjunkjunk" + first_fragment)
    decoder = RequestDecoder()
    decoder.decode(chunks[0])
    broken = decoder.decode(b"\x00\x00\x00\x10moof" + bytes(200))  # a fragment with no readable sample
    assert broken.video == [] and len(broken.audio) == 0
