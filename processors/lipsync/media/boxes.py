"""ISO BMFF box writing for a two-track (H.264 + AAC) fragmented MP4: init segment and moof/mdat fragments."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MOVIE_TIMESCALE = 1000
VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2

# sample_flags (ISO/IEC 14496-12 8.8.3.1): a sync sample "depends on no other sample"; every other sample
# "depends on others" and sets sample_is_non_sync_sample, which is what MSE uses to find random access points.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200
_TRUN_SAMPLE_FLAGS = 0x000400
_TRUN_FLAGS = _TRUN_DATA_OFFSET | _TRUN_SAMPLE_DURATION | _TRUN_SAMPLE_SIZE | _TRUN_SAMPLE_FLAGS

_BOX_HEADER_SIZE = 8
_UNITY_MATRIX = struct.pack(">9i", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_AVC_HIGH_PROFILES = frozenset({100, 110, 122, 144})
_MPEG4_AUDIO_OBJECT_TYPE = 0x40
_AUDIO_STREAM_TYPE = 0x05


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """What the init segment needs to describe the H.264 track."""

    timescale: int
    width: int
    height: int
    sps: bytes
    pps: bytes


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """What the init segment needs to describe the AAC track."""

    sample_rate: int
    channels: int
    audio_specific_config: bytes
    priming_samples: int
    avg_bitrate: int
    max_frame_bytes: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One coded frame for an mdat: its bytes, its duration in track ticks, whether it is a sync sample."""

    data: bytes
    duration: int
    is_sync: bool


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """The samples of one track inside one fragment, starting at ``base_decode_time`` track ticks."""

    track_id: int
    base_decode_time: int
    samples: Sequence[Sample]


def box(kind: bytes, *payloads: bytes) -> bytes:
    body = b"".join(payloads)
    return struct.pack(">I4s", _BOX_HEADER_SIZE + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payloads: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payloads)


def avc_decoder_configuration(sps: bytes, pps: bytes) -> bytes:
    """The avcC record (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL length prefixes."""
    profile_idc, constraint_flags, level_idc = sps[1], sps[2], sps[3]
    record = bytearray([1, profile_idc, constraint_flags, level_idc, 0xFC | 3, 0xE0 | 1])
    record += struct.pack(">H", len(sps)) + sps
    record += bytes([1]) + struct.pack(">H", len(pps)) + pps
    if profile_idc in _AVC_HIGH_PROFILES:
        # High profiles must carry the chroma/bit-depth trailer; the encoder is always fed 8-bit 4:2:0.
        record += bytes([0xFC | 1, 0xF8 | 0, 0xF8 | 0, 0])
    return bytes(record)


def avc_codec_string(sps: bytes) -> str:
    """RFC 6381 ``avc1.PPCCLL`` from the SPS: profile_idc, constraint flags and level_idc."""
    return f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"


def aac_codec_string(audio_specific_config: bytes) -> str:
    """RFC 6381 ``mp4a.40.N`` where N is the audio object type in the AudioSpecificConfig's first 5 bits."""
    return f"mp4a.40.{audio_specific_config[0] >> 3}"


def init_segment(video: VideoTrack, audio: AudioTrack) -> bytes:
    return _ftyp() + box(
        b"moov",
        _mvhd(next_track_id=AUDIO_TRACK_ID + 1),
        _video_trak(video),
        _audio_trak(audio),
        box(b"mvex", _trex(VIDEO_TRACK_ID), _trex(AUDIO_TRACK_ID)),
    )


def media_segment(sequence_number: int, fragments: Sequence[TrackFragment]) -> bytes:
    """One moof (one traf per non-empty track) followed by one mdat holding the tracks' samples in order."""
    tracks = [fragment for fragment in fragments if fragment.samples]
    if not tracks:
        return b""
    # Offsets are fixed-width fields, so a first pass with zero offsets gives the moof's final size.
    moof_size = len(_moof(sequence_number, tracks, [0] * len(tracks)))
    first_payload_offset = moof_size + _BOX_HEADER_SIZE
    moof = _moof(sequence_number, tracks, _data_offsets(tracks, first_payload_offset))
    payloads = [sample.data for fragment in tracks for sample in fragment.samples]
    mdat_header = struct.pack(">I4s", _BOX_HEADER_SIZE + sum(map(len, payloads)), b"mdat")
    return b"".join([moof, mdat_header, *payloads])


def _data_offsets(tracks: Sequence[TrackFragment], first_payload_offset: int) -> list[int]:
    offsets = []
    offset = first_payload_offset
    for fragment in tracks:
        offsets.append(offset)
        offset += sum(len(sample.data) for sample in fragment.samples)
    return offsets


def _moof(sequence_number: int, tracks: Sequence[TrackFragment], data_offsets: Sequence[int]) -> bytes:
    trafs = [_traf(fragment, offset) for fragment, offset in zip(tracks, data_offsets, strict=True)]
    return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number)), *trafs)


def _traf(fragment: TrackFragment, data_offset: int) -> bytes:
    return box(
        b"traf",
        # default-base-is-moof makes every trun data_offset relative to its own moof, which is what MSE
        # expects when fragments are appended one by one.
        full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", fragment.track_id)),
        full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.base_decode_time)),
        _trun(fragment.samples, data_offset),
    )


def _trun(samples: Sequence[Sample], data_offset: int) -> bytes:
    table = struct.pack(f">{3 * len(samples)}I", *_flatten_sample_fields(samples))
    return full_box(b"trun", 0, _TRUN_FLAGS, struct.pack(">Ii", len(samples), data_offset), table)


def _flatten_sample_fields(samples: Sequence[Sample]) -> Iterable[int]:
    for sample in samples:
        yield sample.duration
        yield len(sample.data)
        yield SYNC_SAMPLE_FLAGS if sample.is_sync else NON_SYNC_SAMPLE_FLAGS


def _ftyp() -> bytes:
    # iso5 is the brand that introduces default-base-is-moof; iso6 allows tfdt-only timing.
    brands = (b"iso5", b"iso6", b"avc1", b"mp41")
    return box(b"ftyp", b"iso5", struct.pack(">I", 512), *brands)


def _mvhd(next_track_id: int) -> bytes:
    # Duration 0: the movie's length is only known from the fragments that follow.
    return full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, MOVIE_TIMESCALE, 0),
        struct.pack(">iH10x", 0x00010000, 0x0100),
        _UNITY_MATRIX,
        bytes(24),
        struct.pack(">I", next_track_id),
    )


def _tkhd(track_id: int, *, is_audio: bool, width: int = 0, height: int = 0) -> bytes:
    enabled_in_movie_in_preview = 0x000007
    volume = 0x0100 if is_audio else 0
    return full_box(
        b"tkhd",
        0,
        enabled_in_movie_in_preview,
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),
        bytes(8),
        struct.pack(">hhHH", 0, 0, volume, 0),
        _UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )


def _trex(track_id: int) -> bytes:
    # Defaults are all zero: every trun spells out each sample's duration, size and flags.
    first_sample_description = 1
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, first_sample_description, 0, 0, 0))


def _mdhd(timescale: int) -> bytes:
    return full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, _packed_language("und"), 0))


def _packed_language(code: str) -> int:
    first, second, third = (ord(letter) - 0x60 for letter in code)
    return (first << 10) | (second << 5) | third


def _hdlr(handler_type: bytes, name: str) -> bytes:
    return full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler_type), name.encode() + b"\x00")


def _dinf() -> bytes:
    media_is_in_this_file = 0x000001
    return box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, media_is_in_this_file)))


def _stbl(sample_entry: bytes) -> bytes:
    # Sample tables stay empty: in a fragmented file every sample is described by a trun.
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )


def _video_trak(video: VideoTrack) -> bytes:
    minf = box(b"minf", full_box(b"vmhd", 0, 1, bytes(8)), _dinf(), _stbl(_avc1_sample_entry(video)))
    mdia = box(b"mdia", _mdhd(video.timescale), _hdlr(b"vide", "VideoHandler"), minf)
    return box(b"trak", _tkhd(VIDEO_TRACK_ID, is_audio=False, width=video.width, height=video.height), mdia)


def _audio_trak(audio: AudioTrack) -> bytes:
    minf = box(b"minf", full_box(b"smhd", 0, 0, bytes(4)), _dinf(), _stbl(_mp4a_sample_entry(audio)))
    mdia = box(b"mdia", _mdhd(audio.sample_rate), _hdlr(b"soun", "SoundHandler"), minf)
    return box(b"trak", _tkhd(AUDIO_TRACK_ID, is_audio=True), _priming_edit_list(audio.priming_samples), mdia)


def _priming_edit_list(priming_samples: int) -> bytes:
    """One edit that starts the audio track's presentation ``priming_samples`` into its media.

    An AAC encoder emits ``priming_samples`` of decoder warm-up before the first real input sample, so the
    audio media timeline starts that far ahead of the video. The edit maps media time ``priming_samples``
    to presentation time 0, re-aligning the first real sample with the first video frame while the priming
    frame itself is still delivered, so the decoder's overlap state is correct from the first output sample.
    segment_duration 0 means "to the end of the media", the only honest value before the length is known;
    Chromium and FFmpeg both read a single edit this way.
    """
    entry = struct.pack(">Iihh", 0, priming_samples, 1, 0)
    return box(b"edts", full_box(b"elst", 0, 0, struct.pack(">I", 1), entry))


def _avc1_sample_entry(video: VideoTrack) -> bytes:
    resolution_72_dpi = 0x00480000
    return box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHIIIH", video.width, video.height, resolution_72_dpi, resolution_72_dpi, 0, 1),
        bytes(32),
        struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", avc_decoder_configuration(video.sps, video.pps)),
    )


def _mp4a_sample_entry(audio: AudioTrack) -> bytes:
    bits_per_sample = 16
    return box(
        b"mp4a",
        bytes(6),
        struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHHI", audio.channels, bits_per_sample, 0, 0, audio.sample_rate << 16),
        _esds(audio),
    )


def _esds(audio: AudioTrack) -> bytes:
    decoder_specific_info = _descriptor(0x05, audio.audio_specific_config)
    decoder_config = _descriptor(
        0x04,
        bytes([_MPEG4_AUDIO_OBJECT_TYPE, (_AUDIO_STREAM_TYPE << 2) | 1]),
        audio.max_frame_bytes.to_bytes(3, "big"),
        struct.pack(">II", audio.avg_bitrate, audio.avg_bitrate),
        decoder_specific_info,
    )
    sl_config_predefined_mp4 = _descriptor(0x06, bytes([0x02]))
    es_descriptor = _descriptor(0x03, struct.pack(">HB", AUDIO_TRACK_ID, 0), decoder_config, sl_config_predefined_mp4)
    return full_box(b"esds", 0, 0, es_descriptor)


def _descriptor(tag: int, *payloads: bytes) -> bytes:
    body = b"".join(payloads)
    return bytes([tag]) + _expandable_size(len(body)) + body


def _expandable_size(size: int) -> bytes:
    """MPEG-4 descriptor length: 7 bits per byte, most significant first, high bit set on all but the last."""
    groups = [size & 0x7F]
    size >>= 7
    while size:
        groups.append(0x80 | (size & 0x7F))
        size >>= 7
    return bytes(reversed(groups))
