"""A request's fMP4 chunks decode, as they arrive, into video frames each with exactly the audio it shows."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from consumers.fmp4_frames import Fmp4FrameDecoder, split_init_segment
from processors.lipsync.core import LipSyncCore
from processors.lipsync.engines.embedded import EmbeddedEngine
from producers.audio import Utterance, UtteranceTarget
from schemas.avatar import AvatarFaceData
from schemas.session import VideoChunkMeta
from tests.unit.face_fixtures import astronaut_photo


@pytest.fixture(scope="module")
def avatar() -> AvatarFaceData:
    return astronaut_photo()


def rendered(avatar: AvatarFaceData, rate: int, seconds: float = 2.0) -> tuple[np.ndarray, list[tuple[bytes, bool]]]:
    """(the audio on the video's timeline, the chunks) of a voice streamed in 100 ms pieces."""
    t = np.arange(int(rate * seconds)) / rate
    pcm = (7000 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.int16)
    core = LipSyncCore(EmbeddedEngine(), lambda _id: avatar, chunk_frames=12, first_chunk_frames=10)
    utterance = Utterance(UtteranceTarget(f"r{rate}", "s", avatar.avatar_id, rate), max_samples=10**9)
    segments = [s for i in range(0, len(pcm), rate // 10) for s in utterance.add(pcm[i : i + rate // 10])]
    segments += utterance.end()
    timeline = np.concatenate([np.frombuffer(s.pcm16, "<i2") for s in segments])
    chunks = [(e.payload, e.meta.is_last) for s in segments for e in core.handle(s)
              if isinstance(e.meta, VideoChunkMeta)]
    return timeline, chunks


@pytest.mark.parametrize("rate", [16_000, 24_000, 48_000])
def test_every_frame_comes_with_its_40_ms_of_the_audio(avatar: AvatarFaceData, rate: int) -> None:
    timeline, chunks = rendered(avatar, rate)
    decoder = Fmp4FrameDecoder()
    frames = [frame for data, is_last in chunks for frame in decoder.feed(data, is_last=is_last)]
    assert [f.index for f in frames] == list(range(len(timeline) // (rate // 25)))
    assert all(f.image.shape == (avatar.height, avatar.width, 3) and len(f.audio) == rate // 25 for f in frames)
    audio = np.concatenate([f.audio for f in frames]).astype(np.float64)
    inner = slice(rate // 5, len(timeline) - rate // 5)  # AAC is lossy at the very edges
    assert np.corrcoef(audio[inner], timeline[inner].astype(np.float64))[0, 1] > 0.99, "on the video's clock"


def test_a_frame_waits_for_its_audio_and_the_last_chunk_releases_the_rest(avatar: AvatarFaceData) -> None:
    _timeline, chunks = rendered(avatar, 16_000, seconds=1.0)
    decoder = Fmp4FrameDecoder()
    first = decoder.feed(chunks[0][0])
    assert first == [], "the first chunk's AAC is still in the encoder's look-ahead"
    given = len(first) + sum(len(decoder.feed(data, is_last=is_last)) for data, is_last in chunks[1:])
    assert given == 25


def test_the_decoded_video_matches_a_whole_file_decode(avatar: AvatarFaceData) -> None:
    _timeline, chunks = rendered(avatar, 24_000, seconds=1.0)
    decoder = Fmp4FrameDecoder()
    mine = [f.image for data, is_last in chunks for f in decoder.feed(data, is_last=is_last)]
    with av.open(io.BytesIO(b"".join(data for data, _ in chunks)), mode="r", format="mp4") as container:
        whole = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(mine) == len(whole) and all(np.array_equal(a, b) for a, b in zip(mine, whole, strict=True))


def test_the_init_segment_is_everything_before_the_first_fragment() -> None:
    boxes = (16).to_bytes(4, "big") + b"ftyp" + bytes(8) + (8).to_bytes(4, "big") + b"moov"
    fragment = (8).to_bytes(4, "big") + b"moof" + (8).to_bytes(4, "big") + b"mdat"
    assert split_init_segment(boxes + fragment) == (boxes, fragment)
