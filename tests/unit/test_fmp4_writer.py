"""Tests for the streaming fragmented-MP4 writer: structure, decodability, timing and A/V alignment."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from skimage import data

from processors.lipsync.media import FragmentedMp4Writer

FPS = 25
RATE = 16_000
SAMPLES_PER_FRAME = RATE // FPS
AAC_FRAME = 1024
VIDEO_TRACK, AUDIO_TRACK = 1, 2
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"mvex", b"edts", b"moof", b"traf"}
_SAMPLE_ENTRY_HEADER = {b"avc1": 78, b"mp4a": 28}


@dataclass
class Box:
    kind: bytes
    payload: bytes
    children: list[Box]

    def find(self, path: str) -> list[Box]:
        head, _, rest = path.partition("/")
        matches = [child for child in self.children if child.kind == head.encode()]
        return matches if not rest else [found for match in matches for found in match.find(rest)]


@dataclass
class TrackRun:
    track_id: int
    base_decode_time: int
    data_offset: int
    durations: list[int]
    sizes: list[int]
    flags: list[int]


@dataclass
class Stream:
    chunks: list[bytes]
    frames_per_write: list[int]
    pcm: npt.NDArray[np.int16]

    @property
    def file_bytes(self) -> bytes:
        return b"".join(self.chunks)


def parse_boxes(buffer: bytes) -> list[Box]:
    boxes, offset = [], 0
    while offset < len(buffer):
        size, kind = struct.unpack_from(">I4s", buffer, offset)
        assert size >= 8, f"bad box size {size} at {offset}"
        payload = buffer[offset + 8 : offset + size]
        boxes.append(Box(kind, payload, _children(kind, payload)))
        offset += size
    assert offset == len(buffer), "boxes overrun the buffer"
    return boxes


def _children(kind: bytes, payload: bytes) -> list[Box]:
    if kind in _CONTAINERS:
        return parse_boxes(payload)
    if kind == b"stsd":
        return parse_boxes(payload[8:])
    if kind in _SAMPLE_ENTRY_HEADER:
        return parse_boxes(payload[_SAMPLE_ENTRY_HEADER[kind] :])
    return []


def track_runs(moof: Box) -> list[TrackRun]:
    runs = []
    for traf in moof.find("traf"):
        (track_id,) = struct.unpack_from(">I", traf.find("tfhd")[0].payload, 4)
        (base_decode_time,) = struct.unpack_from(">Q", traf.find("tfdt")[0].payload, 4)
        trun = traf.find("trun")[0].payload
        count, data_offset = struct.unpack_from(">Ii", trun, 4)
        table = struct.unpack_from(f">{3 * count}I", trun, 12)
        runs.append(
            TrackRun(track_id, base_decode_time, data_offset, [*table[0::3]], [*table[1::3]], [*table[2::3]])
        )
    return runs


def astronaut(width: int, height: int) -> npt.NDArray[np.uint8]:
    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def moving_frames(base: npt.NDArray[np.uint8], first: int, count: int) -> list[npt.NDArray[np.uint8]]:
    return [np.roll(base, 2 * (first + index), axis=1) for index in range(count)]


def tone(first_sample: int, count: int) -> npt.NDArray[np.int16]:
    times = np.arange(first_sample, first_sample + count) / RATE
    return (6000 * np.sin(2 * np.pi * 330 * times)).astype(np.int16)


def encode(width: int, height: int, frames_per_write: list[int]) -> Stream:
    writer = FragmentedMp4Writer(width, height, fps=FPS, audio_rate=RATE)
    base = astronaut(width, height)
    chunks, written = [], 0
    for count in frames_per_write:
        chunks.append(
            writer.write(
                moving_frames(base, written, count),
                tone(written * SAMPLES_PER_FRAME, count * SAMPLES_PER_FRAME),
            )
        )
        written += count
    chunks.append(writer.close())
    return Stream(chunks, frames_per_write, tone(0, written * SAMPLES_PER_FRAME))


def random_write_sizes(writes: int, seed: int) -> list[int]:
    return [int(size) for size in np.random.default_rng(seed).integers(1, 13, writes)]


def ffprobe_streams(path: Path) -> tuple[list[dict[str, str]], str]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)["streams"], result.stderr


def decoded_audio(file_bytes: bytes) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    with av.open(io.BytesIO(file_bytes), "r") as container:
        for frame in container.decode(audio=0):
            assert frame.pts is not None
            yield frame.pts, frame.to_ndarray()[0]


@pytest.fixture(scope="module")
def stream() -> Stream:
    return encode(128, 96, random_write_sizes(30, seed=7))


@pytest.fixture(scope="module")
def stream_file(stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fmp4") / "stream.mp4"
    path.write_bytes(stream.file_bytes)
    return path


def test_first_chunk_is_init_segment_then_fragment_and_every_later_chunk_starts_with_moof(
    stream: Stream,
) -> None:
    assert [box.kind for box in parse_boxes(stream.chunks[0])] == [b"ftyp", b"moov", b"moof", b"mdat"]
    for chunk in stream.chunks[1:]:
        assert [box.kind for box in parse_boxes(chunk)] == [b"moof", b"mdat"]


def test_init_segment_has_the_boxes_chromium_mse_expects(stream: Stream) -> None:
    moov = parse_boxes(stream.chunks[0])[1]
    assert moov.find("mvhd")
    assert len(moov.find("mvex/trex")) == 2
    for trak in moov.find("trak"):
        for path in ("tkhd", "mdia/mdhd", "mdia/hdlr", "mdia/minf/dinf/dref"):
            assert trak.find(path), path
        for table in ("stts", "stsc", "stsz", "stco"):
            assert trak.find(f"mdia/minf/stbl/{table}"), table
    video, audio = moov.find("trak")
    assert video.find("mdia/minf/vmhd") and video.find("mdia/minf/stbl/stsd/avc1/avcC")
    assert audio.find("mdia/minf/smhd") and audio.find("mdia/minf/stbl/stsd/mp4a/esds")


def test_audio_edit_list_skips_exactly_the_aac_priming(stream: Stream) -> None:
    moov = parse_boxes(stream.chunks[0])[1]
    video, audio = moov.find("trak")
    assert not video.find("edts")
    elst = audio.find("edts/elst")[0].payload
    entry_count, segment_duration, media_time, rate = struct.unpack_from(">IIih", elst, 4)
    assert (entry_count, segment_duration, media_time, rate) == (1, 0, AAC_FRAME, 1)


def test_each_fragment_keeps_both_tracks_in_one_moof_with_data_offsets_inside_its_mdat(
    stream: Stream,
) -> None:
    fragments_with_both_tracks = 0
    for chunk in stream.chunks[1:-1]:
        moof, _ = parse_boxes(chunk)
        runs = track_runs(moof)
        track_ids = [run.track_id for run in runs]
        assert track_ids in ([VIDEO_TRACK], [VIDEO_TRACK, AUDIO_TRACK])
        fragments_with_both_tracks += len(track_ids) == 2
        expected_offset = len(moof.payload) + 8 + 8  # moof header + payload, then the mdat header
        for run in runs:
            assert run.data_offset == expected_offset
            expected_offset += sum(run.sizes)
        assert expected_offset == len(chunk)
    assert fragments_with_both_tracks > len(stream.chunks) // 2


def test_video_samples_are_length_prefixed_nal_units(stream: Stream) -> None:
    moof, _ = parse_boxes(stream.chunks[3])
    video = track_runs(moof)[0]
    offset = video.data_offset
    for size in video.sizes:
        end, position = offset + size, offset
        while position < end:
            (nal_length,) = struct.unpack_from(">I", stream.chunks[3], position)
            assert nal_length > 0
            position += 4 + nal_length
        assert position == end
        offset = end


def test_first_video_sample_of_every_fragment_is_flagged_sync_and_others_are_not(stream: Stream) -> None:
    for chunk, frames in zip(stream.chunks, [*stream.frames_per_write, 0], strict=True):
        runs = [run for run in track_runs(parse_boxes(chunk)[-2]) if run.track_id == VIDEO_TRACK]
        if not frames:
            assert not runs
            continue
        (video,) = runs
        assert len(video.flags) == frames
        assert video.flags[0] == 0x02000000
        assert all(flags & 0x00010000 for flags in video.flags[1:])


def test_pyav_decodes_every_frame_as_h264_and_aac_with_matching_durations(stream: Stream) -> None:
    with av.open(io.BytesIO(stream.file_bytes), "r") as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        frames = list(container.decode(video=0))
    total_frames = sum(stream.frames_per_write)
    assert len(frames) == total_frames
    assert frames[-1].time == pytest.approx((total_frames - 1) / FPS)
    audio_samples = sum(samples.size for _, samples in decoded_audio(stream.file_bytes))
    assert stream.pcm.size <= audio_samples < stream.pcm.size + AAC_FRAME


def test_ffprobe_reads_one_h264_and_one_aac_stream_without_errors(stream: Stream, stream_file: Path) -> None:
    streams, errors = ffprobe_streams(stream_file)
    assert errors == ""
    assert [(s["codec_type"], s["codec_name"]) for s in streams] == [("video", "h264"), ("audio", "aac")]
    video, audio = streams
    total_frames = sum(stream.frames_per_write)
    assert int(video["nb_read_packets"]) == total_frames
    assert float(video["duration"]) == pytest.approx(total_frames / FPS)
    audio_end = float(audio["start_time"]) + float(audio["duration"])
    assert 0 <= audio_end - stream.pcm.size / RATE < AAC_FRAME / RATE


def test_each_fragment_decodes_on_its_own_after_the_init_segment(stream: Stream) -> None:
    init = b"".join(box_bytes for box_bytes in _top_level_bytes(stream.chunks[0])[:2])
    for chunk, frames in zip(stream.chunks[1:-1], stream.frames_per_write[1:], strict=True):
        with av.open(io.BytesIO(init + chunk), "r") as container:
            packets = [packet for packet in container.demux(video=0) if packet.size]
            assert packets[0].is_keyframe
            decoded = [frame for packet in packets for frame in packet.decode()]
            decoded += container.streams.video[0].codec_context.decode(None)
        assert len(decoded) == frames


def _top_level_bytes(chunk: bytes) -> list[bytes]:
    pieces, offset = [], 0
    while offset < len(chunk):
        (size,) = struct.unpack_from(">I", chunk, offset)
        pieces.append(chunk[offset : offset + size])
        offset += size
    return pieces


def test_tfdt_of_each_track_continues_exactly_over_a_thousand_small_writes(tmp_path: Path) -> None:
    sizes = random_write_sizes(1100, seed=3)
    stream = encode(64, 48, sizes)
    next_decode_time = {VIDEO_TRACK: 0, AUDIO_TRACK: 0}
    for chunk in stream.chunks:
        for run in track_runs(parse_boxes(chunk)[-2]):
            assert run.base_decode_time == next_decode_time[run.track_id]
            next_decode_time[run.track_id] += sum(run.durations)
    assert next_decode_time[VIDEO_TRACK] == sum(sizes) * 90_000 // FPS
    audio_presented = next_decode_time[AUDIO_TRACK] - AAC_FRAME
    assert 0 <= audio_presented - stream.pcm.size < AAC_FRAME
    path = tmp_path / "long.mp4"
    path.write_bytes(stream.file_bytes)
    streams, errors = ffprobe_streams(path)
    assert errors == ""
    assert int(streams[0]["nb_read_packets"]) == sum(sizes)


def test_audio_onset_lands_on_the_video_clock_despite_aac_priming() -> None:
    writer = FragmentedMp4Writer(64, 48, fps=FPS, audio_rate=RATE)
    onset = 20 * SAMPLES_PER_FRAME
    pcm = np.zeros(50 * SAMPLES_PER_FRAME, np.int16)
    pcm[onset:] = tone(0, pcm.size - onset)
    blank = np.zeros((48, 64, 3), np.uint8)
    chunks = [
        writer.write([blank] * 10, pcm[start : start + 10 * SAMPLES_PER_FRAME])
        for start in range(0, pcm.size, 10 * SAMPLES_PER_FRAME)
    ]
    file_bytes = b"".join([*chunks, writer.close()])
    loud = [
        pts + int(np.argmax(np.abs(samples) > 0.09))
        for pts, samples in decoded_audio(file_bytes)
        if np.abs(samples).max() > 0.09
    ]
    assert abs(loud[0] - onset) < RATE // 500, loud[0] - onset


def test_mime_names_the_h264_profile_and_level_of_the_real_sps(stream_file: Path) -> None:
    writer = FragmentedMp4Writer(128, 96)
    match = re.fullmatch(
        r'video/mp4; codecs="avc1\.([0-9A-F]{2})([0-9A-F]{2})([0-9A-F]{2}), mp4a\.40\.2"', writer.mime
    )
    assert match is not None
    streams, _ = ffprobe_streams(stream_file)
    assert int(match[1], 16) == 66 and streams[0]["profile"] == "Constrained Baseline"
    assert int(match[2], 16) & 0x40
    assert int(match[3], 16) == int(streams[0]["level"])


def test_mime_level_grows_with_the_frame_size() -> None:
    assert avc_level(FragmentedMp4Writer(128, 96).mime) < avc_level(FragmentedMp4Writer(1280, 720).mime)


def avc_level(mime: str) -> int:
    match = re.search(r"avc1\.[0-9A-F]{4}([0-9A-F]{2})", mime)
    assert match is not None
    return int(match[1], 16)


@pytest.mark.parametrize(("width", "height"), [(513, 512), (512, 511), (7, 9)])
def test_odd_frame_size_is_rejected_with_a_message_naming_the_size(width: int, height: int) -> None:
    with pytest.raises(ValueError, match=rf"even.*{width}x{height}"):
        FragmentedMp4Writer(width, height)


def test_writing_nothing_returns_no_bytes_and_keeps_the_init_segment_for_the_first_real_write() -> None:
    writer = FragmentedMp4Writer(64, 48)
    assert writer.write([], np.zeros(0, np.int16)) == b""
    first = writer.write([np.zeros((48, 64, 3), np.uint8)], np.zeros(SAMPLES_PER_FRAME, np.int16))
    assert first.startswith(writer.init_segment)
    assert parse_boxes(first[len(writer.init_segment) :])[0].kind == b"moof"


def test_close_without_any_write_returns_no_bytes() -> None:
    assert FragmentedMp4Writer(64, 48).close() == b""


def test_close_flushes_the_audio_tail_padded_to_a_whole_aac_frame() -> None:
    writer = FragmentedMp4Writer(64, 48)
    pcm = tone(0, 3 * SAMPLES_PER_FRAME)
    before_close = writer.write([np.zeros((48, 64, 3), np.uint8)] * 3, pcm)
    tail = writer.close()
    audio_before = sum(
        sum(r.durations) for r in track_runs(parse_boxes(before_close)[-2]) if r.track_id == AUDIO_TRACK
    )
    (audio_tail,) = [run for run in track_runs(parse_boxes(tail)[0]) if run.track_id == AUDIO_TRACK]
    presented = audio_before + sum(audio_tail.durations) - AAC_FRAME
    assert audio_before - AAC_FRAME < pcm.size
    assert presented == 2 * AAC_FRAME  # 1920 input samples → two whole frames, the second padded with silence


def test_duration_ms_is_the_media_time_of_the_frames_written() -> None:
    writer = FragmentedMp4Writer(64, 48, fps=FPS)
    assert writer.duration_ms == 0
    writer.write([np.zeros((48, 64, 3), np.uint8)] * 7, np.zeros(7 * SAMPLES_PER_FRAME, np.int16))
    writer.write([np.zeros((48, 64, 3), np.uint8)] * 5, np.zeros(5 * SAMPLES_PER_FRAME, np.int16))
    assert writer.duration_ms == 480


def test_frames_of_the_wrong_shape_or_audio_of_the_wrong_type_are_rejected() -> None:
    writer = FragmentedMp4Writer(64, 48)
    with pytest.raises(ValueError, match="shape"):
        writer.write([np.zeros((48, 64, 4), np.uint8)], np.zeros(SAMPLES_PER_FRAME, np.int16))
    with pytest.raises(ValueError, match="int16"):
        writer.write([np.zeros((48, 64, 3), np.uint8)], np.zeros(SAMPLES_PER_FRAME, np.float32))


def test_write_after_close_raises() -> None:
    writer = FragmentedMp4Writer(64, 48)
    writer.close()
    with pytest.raises(RuntimeError, match="after close"):
        writer.write([np.zeros((48, 64, 3), np.uint8)], np.zeros(SAMPLES_PER_FRAME, np.int16))


def _fragment_ends(chunks: list[bytes]) -> list[tuple[float, float]]:
    """(video end, audio end) in seconds of content (the audio's priming taken off) after each fragment."""
    ends, reached = [], {VIDEO_TRACK: 0.0, AUDIO_TRACK: 0.0}
    for chunk in chunks:
        for moof in [box for box in parse_boxes(chunk) if box.kind == b"moof"]:
            for run in track_runs(moof):
                clock = 90_000 if run.track_id == VIDEO_TRACK else RATE
                priming = 0 if run.track_id == VIDEO_TRACK else AAC_FRAME
                reached[run.track_id] = (run.base_decode_time + sum(run.durations) - priming) / clock
            ends.append((reached[VIDEO_TRACK], reached[AUDIO_TRACK]))
    return ends


def _write_in_chunks(sizes: list[int], *, tell_upcoming: bool) -> list[bytes]:
    writer = FragmentedMp4Writer(64, 48, fps=FPS, audio_rate=RATE)
    pcm = tone(0, sum(sizes) * SAMPLES_PER_FRAME)
    blank = np.zeros((48, 64, 3), np.uint8)
    chunks, start = [], 0
    for size in sizes:
        end = start + size * SAMPLES_PER_FRAME
        chunks.append(writer.write([blank] * size, pcm[start:end], pcm[end:] if tell_upcoming else None))
        start = end
    return [*chunks, writer.close()]


def test_told_the_upcoming_audio_each_fragment_can_play_to_the_end_of_its_video() -> None:
    # A player plays only where both tracks have data: without the audio that follows, a 10-frame first chunk
    # (0.4 s) is playable only to ~0.27 s, and the next chunk has that much less time to arrive.
    sizes = [10, 12, 12, 1, 12]
    without = _fragment_ends(_write_in_chunks(sizes, tell_upcoming=False))
    told = _fragment_ends(_write_in_chunks(sizes, tell_upcoming=True))
    assert all(audio < video - 0.05 for video, audio in without[:-1])
    # The last write has no audio after it: it and close() end as before.
    assert all(video <= audio < video + 2 * AAC_FRAME / RATE for video, audio in told[:-2])
    assert told[-2:] == without[-2:]


def test_audio_encoded_ahead_is_the_same_audio_track_byte_for_byte() -> None:
    def audio_payload(chunks: list[bytes]) -> bytes:
        return b"".join(samples.tobytes() for _, samples in sorted(decoded_audio(b"".join(chunks)),
                                                                  key=lambda decoded: decoded[0]))

    sizes = [10, 12, 3, 12, 7]
    assert audio_payload(_write_in_chunks(sizes, tell_upcoming=True)) == \
        audio_payload(_write_in_chunks(sizes, tell_upcoming=False))


def test_audio_that_does_not_continue_the_promised_upcoming_audio_is_refused() -> None:
    writer = FragmentedMp4Writer(64, 48, fps=FPS, audio_rate=RATE)
    blank = np.zeros((48, 64, 3), np.uint8)
    pcm = tone(0, 20 * SAMPLES_PER_FRAME)
    writer.write([blank] * 10, pcm[: 10 * SAMPLES_PER_FRAME], pcm[10 * SAMPLES_PER_FRAME :])
    with pytest.raises(ValueError, match="does not begin with the upcoming audio"):
        writer.write([blank] * 10, np.zeros(10 * SAMPLES_PER_FRAME, np.int16))


def test_speech_survives_the_aac_round_trip_at_over_30_db_snr() -> None:
    """Real speech (espeak-ng, Persian, with its pauses), written as a session's chunks and decoded back.

    The encoder's fast AAC coder costs a fifth of the default (two-loop) coder's CPU on speech; this pins that it
    does not buy that with fidelity (here the two-loop coder measured 27 dB, the fast one 33 dB)."""
    from processors.tts.engines.espeak import EspeakEngine

    speech = EspeakEngine().synthesize("بابا و مامان با هم به باغ می‌روند. امروز هوا خیلی خوب است.", "fa")
    pcm = speech.pcm
    rate = speech.sample_rate
    per_frame = rate // FPS
    pcm = pcm[: pcm.size // per_frame * per_frame]
    writer = FragmentedMp4Writer(64, 48, fps=FPS, audio_rate=rate)
    blank = np.zeros((48, 64, 3), np.uint8)
    step = 12 * per_frame
    chunks = [writer.write([blank] * (len(pcm[start : start + step]) // per_frame), pcm[start : start + step],
                           pcm[start + step :])
              for start in range(0, pcm.size, step)]
    decoded = np.concatenate([samples for _, samples in decoded_audio(b"".join([*chunks, writer.close()]))])
    original = pcm.astype(np.float32) / 32768
    decoded = decoded[: original.size]
    snr_db = 10 * np.log10(np.sum(original**2) / np.sum((original - decoded) ** 2))
    assert snr_db > 30, snr_db
