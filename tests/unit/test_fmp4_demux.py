"""The fMP4 demuxer (consumers/fmp4_demux.py) on the lip-sync's real encoder output: samples, timestamps, SPS/PPS."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from consumers.fmp4_demux import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    Fmp4Error,
    RequestDemuxer,
    annex_b,
    is_idr,
    split_init_segment,
)
from processors.lipsync.media.encoder import FragmentedMp4Writer

RATE = 16000
START_CODE = b"\x00\x00\x00\x01"


def encoded(frames: int = 34, size: int = 64) -> tuple[FragmentedMp4Writer, list[bytes]]:
    """A request as the lip-sync writes it: 10 frames, then 12 a chunk, then the final flush (audio only)."""
    writer = FragmentedMp4Writer(size, size, fps=25, audio_rate=RATE)
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(frames * RATE // 25) * 2000).astype(np.int16)
    chunks, start = [], 0
    while start < frames:
        end = min(frames, start + (10 if start == 0 else 12))
        video = [np.roll(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), i, 0) for i in range(start, end)]
        chunks.append(writer.write(video, pcm[start * RATE // 25:end * RATE // 25]))
        start = end
    chunks.append(writer.close())
    return writer, chunks


@pytest.fixture(scope="module")
def written() -> tuple[FragmentedMp4Writer, list[bytes]]:
    return encoded()


def test_every_chunk_gives_its_video_samples_one_frame_apart_and_the_first_is_the_idr(
        written: tuple[FragmentedMp4Writer, list[bytes]]) -> None:
    _, chunks = written
    demuxer = RequestDemuxer()
    per_chunk = [demuxer.feed(chunk) for chunk in chunks]
    video = demuxer.tracks.video if demuxer.tracks else None
    assert video is not None and (video.width, video.height) == (64, 64)
    counts, times = [], []
    for samples in per_chunk:
        mine = [s for s in samples if s.track_id == video.track_id]
        counts.append(len(mine))
        if mine:
            assert mine[0].is_sync and is_idr(mine[0], video), "every chunk starts with an IDR"
            assert not any(s.is_sync or is_idr(s, video) for s in mine[1:]), "no other IDR, no B-frames"
        times += [demuxer.seconds(s) for s in mine]
    assert counts == [10, 12, 12, 0]
    assert times == pytest.approx([i / 25 for i in range(34)]), "on the request's clock, continuing across chunks"


def test_the_audio_samples_run_on_without_a_gap_and_the_priming_sits_before_zero(
        written: tuple[FragmentedMp4Writer, list[bytes]]) -> None:
    writer, chunks = written
    demuxer = RequestDemuxer()
    samples = [s for chunk in chunks for s in demuxer.feed(chunk)]
    audio = demuxer.tracks.audio if demuxer.tracks else None
    assert audio is not None and audio.sample_rate == RATE and audio.channels == 1
    assert audio.priming == writer._audio.initial_padding == 1024
    mine = [s for s in samples if s.track_id == audio.track_id]
    assert all(s.duration == 1024 for s in mine)
    assert [s.decode_time for s in mine] == [i * 1024 for i in range(len(mine))]
    assert demuxer.seconds(mine[0]) == pytest.approx(-1024 / RATE)
    assert audio.config == writer._audio.extradata, "the AudioSpecificConfig, read back from esds"


def test_the_parameter_sets_are_the_encoders_and_its_profile_is_constrained_baseline(
        written: tuple[FragmentedMp4Writer, list[bytes]]) -> None:
    writer, chunks = written
    demuxer = RequestDemuxer()
    demuxer.feed(chunks[0])
    video = demuxer.tracks.video if demuxer.tracks else None
    assert video is not None
    extradata = writer._video.extradata or b""
    assert all(START_CODE[1:] + unit in extradata for unit in (*video.sps, *video.pps))
    assert [u[0] & 0x1F for u in video.sps] == [NAL_SPS] and [u[0] & 0x1F for u in video.pps] == [NAL_PPS]
    # What the WebRTC answer negotiates (profile-level-id 42e01f): profile 66 with constraint_set1.
    profile, constraints = int(video.profile_level_id[:2], 16), int(video.profile_level_id[2:4], 16)
    assert profile == 66 and constraints & 0x40, video.profile_level_id


def test_annex_b_puts_sps_and_pps_before_each_idr_and_decodes_like_the_whole_file(
        written: tuple[FragmentedMp4Writer, list[bytes]]) -> None:
    _, chunks = written
    demuxer = RequestDemuxer()
    samples = [s for chunk in chunks for s in demuxer.feed(chunk)]
    video = demuxer.tracks.video if demuxer.tracks else None
    assert video is not None
    units = [annex_b(s, video) for s in samples if s.track_id == video.track_id]
    for unit in units:
        kinds = [nal[0] & 0x1F for nal in unit.split(START_CODE)[1:]]
        assert (kinds[:3] == [NAL_SPS, NAL_PPS, NAL_IDR] or NAL_IDR in kinds[2:]) if NAL_IDR in kinds \
            else NAL_SPS not in kinds
    # No extradata: the decoder learns the parameter sets from the stream, as a WebRTC receiver does.
    decoder = av.CodecContext.create("h264", "r")
    mine = [f.to_ndarray(format="rgb24") for u in units for f in decoder.decode(av.Packet(u))]
    mine += [f.to_ndarray(format="rgb24") for f in decoder.decode(None)]
    with av.open(io.BytesIO(b"".join(chunks)), mode="r", format="mp4") as container:
        whole = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(mine) == len(whole) == 34 and all(np.array_equal(a, b) for a, b in zip(mine, whole, strict=True))


def test_a_request_joined_after_its_first_chunk_and_broken_boxes_are_refused_with_a_reason(
        written: tuple[FragmentedMp4Writer, list[bytes]]) -> None:
    _, chunks = written
    with pytest.raises(Fmp4Error, match="first chunk"):
        RequestDemuxer().feed(chunks[1])
    init, fragment = split_init_segment(chunks[0])
    assert init[4:8] == b"ftyp" and fragment[4:8] == b"moof" and split_init_segment(fragment) == (b"", fragment)
    with pytest.raises(Fmp4Error, match="overruns"):
        RequestDemuxer().feed(init[:-5] + fragment)
    with pytest.raises(Fmp4Error, match="moov"):
        RequestDemuxer().feed(b"\x00\x00\x00\x10ftypjunkjunk" + fragment)
    demuxer = RequestDemuxer()
    demuxer.feed(chunks[0])
    with pytest.raises(Fmp4Error):
        demuxer.feed(fragment[:len(fragment) // 2])  # a sample's bytes cut off
