"""Demuxes fragmented-MP4 chunks (init segment, then moof+mdat fragments) into timed samples, without decoding.

A pure ISO BMFF box reader for the chunks the lip-sync processor writes (one H.264 ``avc1`` track, one AAC
``mp4a`` track), general enough for any writer's fragments: 32/64-bit box sizes, ``tfhd`` defaults and
base offsets, ``trex`` defaults, ``trun`` per-sample fields. Each sample keeps its track's decode time in
ticks; ``seconds`` puts it on the track's timeline, where the audio edit list's priming samples (the AAC
encoder's warm-up) sit before 0. ``annex_b`` turns a video sample's length-prefixed NAL units into the
start-code form RTP packetisers split on, with the SPS and PPS before every IDR (the writer keeps them only
in the init segment), so a receiver can start at any chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

_FRAGMENT_BOXES = (b"moof", b"styp", b"sidx", b"emsg")
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"mvex", b"moof", b"traf"}
_START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8
_SAMPLE_IS_NON_SYNC = 0x10000


class Fmp4Error(ValueError):
    """The bytes are not the fragmented MP4 expected (a box overruns, a track or its codec setup is missing)."""


@dataclass(frozen=True)
class VideoTrack:
    """An ``avc1`` track: its clock, size and decoder configuration (``avcc`` is FFmpeg's extradata)."""

    track_id: int
    timescale: int
    width: int
    height: int
    avcc: bytes
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    nal_length_size: int

    @property
    def profile_level_id(self) -> str:
        """The SPS's profile_idc, constraint flags and level_idc in hex, as SDP's profile-level-id spells it."""
        return self.sps[0][1:4].hex() if self.sps and len(self.sps[0]) >= 4 else ""


@dataclass(frozen=True)
class AudioTrack:
    """An ``mp4a`` track: its clock, the AAC AudioSpecificConfig, and the priming its edit list hides."""

    track_id: int
    timescale: int
    sample_rate: int
    channels: int
    config: bytes
    priming: int  # ticks at the track's start that are the encoder's warm-up, not content


@dataclass(frozen=True)
class Tracks:
    """What an init segment declares."""

    video: VideoTrack | None
    audio: AudioTrack | None


@dataclass(frozen=True)
class Sample:
    """One access unit of a track: its bytes as stored (length-prefixed NALs for H.264, raw AAC)."""

    track_id: int
    decode_time: int  # ticks of the track's timescale from the track's start
    composition_offset: int
    duration: int
    data: bytes
    is_sync: bool


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int  # of the box's header in the buffer
    body: int  # where its payload starts
    end: int


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[_Box]:
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        body = position + 8
        if size == 1:
            if position + 16 > end:
                raise Fmp4Error(f"box {kind!r} at {position}: truncated 64-bit size")
            size = struct.unpack_from(">Q", data, position + 8)[0]
            body = position + 16
        elif size == 0:
            size = end - position
        if size < body - position or position + size > end:
            raise Fmp4Error(f"box {kind!r} at {position} overruns its container ({size} bytes)")
        yield _Box(kind, position, body, position + size)
        position += size


def _find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> list[_Box]:
    """Every box at ``path`` (kinds from the outermost) under data[start:end]."""
    found: list[_Box] = []
    for box in _boxes(data, start, end):
        if box.kind != path[0]:
            continue
        if len(path) == 1:
            found.append(box)
        elif box.kind in _CONTAINERS:
            found += _find(data, path[1:], box.body, box.end)
    return found


def _one(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> _Box | None:
    found = _find(data, path, start, end)
    return found[0] if found else None


def split_init_segment(data: bytes) -> tuple[bytes, bytes]:
    """(init segment, the rest): the top-level boxes before the first fragment box are the init segment."""
    for box in _boxes(data):
        if box.kind in _FRAGMENT_BOXES:
            return data[:box.start], data[box.start:]
    return data, b""


def parse_init_segment(init: bytes) -> Tracks:
    """The video and audio tracks an init segment (ftyp+moov) declares."""
    moov = _one(init, [b"moov"])
    if moov is None:
        raise Fmp4Error("the init segment has no moov box")
    video: VideoTrack | None = None
    audio: AudioTrack | None = None
    for trak in _find(init, [b"trak"], moov.body, moov.end):
        track_id = _track_id(init, trak)
        mdhd = _one(init, [b"mdia", b"mdhd"], trak.body, trak.end)
        hdlr = _one(init, [b"mdia", b"hdlr"], trak.body, trak.end)
        stsd = _one(init, [b"mdia", b"minf", b"stbl", b"stsd"], trak.body, trak.end)
        if mdhd is None or hdlr is None or stsd is None:
            raise Fmp4Error(f"track {track_id} lacks mdhd, hdlr or stsd")
        timescale = _timescale(init, mdhd)
        handler = init[hdlr.body + 8:hdlr.body + 12]
        entry = next(_boxes(init, stsd.body + 8, stsd.end), None)  # stsd: version/flags, entry count
        if handler == b"vide" and entry is not None and entry.kind == b"avc1" and video is None:
            video = _video_track(init, track_id, timescale, entry)
        elif handler == b"soun" and entry is not None and entry.kind == b"mp4a" and audio is None:
            audio = _audio_track(init, track_id, timescale, entry, _priming(init, trak))
    if video is None and audio is None:
        raise Fmp4Error("the init segment has neither an avc1 nor an mp4a track")
    return Tracks(video, audio)


def _track_id(data: bytes, trak: _Box) -> int:
    tkhd = _one(data, [b"tkhd"], trak.body, trak.end)
    if tkhd is None:
        raise Fmp4Error("a track has no tkhd box")
    version = data[tkhd.body]
    return int(struct.unpack_from(">I", data, tkhd.body + (20 if version == 1 else 12))[0])


def _timescale(data: bytes, mdhd: _Box) -> int:
    version = data[mdhd.body]
    timescale = int(struct.unpack_from(">I", data, mdhd.body + (20 if version == 1 else 12))[0])
    if timescale <= 0:
        raise Fmp4Error("a track's timescale is 0")
    return timescale


def _priming(data: bytes, trak: _Box) -> int:
    """The first edit's media_time: where the track's presentation starts (the AAC priming), 0 without one."""
    elst = _one(data, [b"edts", b"elst"], trak.body, trak.end)
    if elst is None:
        return 0
    version = data[elst.body]
    count = struct.unpack_from(">I", data, elst.body + 4)[0]
    for index in range(count):
        if version == 1:
            _, media_time = struct.unpack_from(">Qq", data, elst.body + 8 + index * 20)
        else:
            _, media_time = struct.unpack_from(">Ii", data, elst.body + 8 + index * 12)
        if media_time >= 0:  # -1 is an empty edit (a delay), not where the media starts
            return int(media_time)
    return 0


def _video_track(data: bytes, track_id: int, timescale: int, entry: _Box) -> VideoTrack:
    width, height = struct.unpack_from(">HH", data, entry.body + 24)
    avcc_box = _one(data, [b"avcC"], entry.body + 78, entry.end)  # after the VisualSampleEntry fields
    if avcc_box is None:
        raise Fmp4Error("the avc1 sample entry has no avcC box")
    avcc = data[avcc_box.body:avcc_box.end]
    if len(avcc) < 7 or avcc[0] != 1:
        raise Fmp4Error("the avcC box is not an AVCDecoderConfigurationRecord version 1")
    nal_length_size = (avcc[4] & 0x03) + 1
    sps, position = _parameter_sets(avcc, 6, avcc[5] & 0x1F)
    pps, _ = _parameter_sets(avcc, position + 1, avcc[position] if position < len(avcc) else 0)
    if not sps or not pps:
        raise Fmp4Error("the avcC box carries no SPS or no PPS")
    return VideoTrack(track_id, timescale, width, height, avcc, tuple(sps), tuple(pps), nal_length_size)


def _parameter_sets(avcc: bytes, position: int, count: int) -> tuple[list[bytes], int]:
    """``count`` 16-bit-length-prefixed parameter sets from ``position``, and where they end."""
    units: list[bytes] = []
    for _ in range(count):
        if position + 2 > len(avcc):
            raise Fmp4Error("the avcC box is truncated")
        size = struct.unpack_from(">H", avcc, position)[0]
        units.append(avcc[position + 2:position + 2 + size])
        position += 2 + size
    if position > len(avcc):
        raise Fmp4Error("the avcC box is truncated")
    return units, position


def _audio_track(data: bytes, track_id: int, timescale: int, entry: _Box, priming: int) -> AudioTrack:
    channels = struct.unpack_from(">H", data, entry.body + 16)[0]
    sample_rate = struct.unpack_from(">I", data, entry.body + 24)[0] >> 16
    esds = _one(data, [b"esds"], entry.body + 28, entry.end)  # after the AudioSampleEntry fields
    if esds is None:
        raise Fmp4Error("the mp4a sample entry has no esds box")
    config = _decoder_specific_info(data[esds.body + 4:esds.end])
    return AudioTrack(track_id, timescale, sample_rate or timescale, channels, config, priming)


def _decoder_specific_info(descriptors: bytes) -> bytes:
    """The AudioSpecificConfig: the DecoderSpecificInfo (tag 5) inside ES_Descriptor → DecoderConfigDescriptor."""
    position = 0
    while position < len(descriptors):
        tag = descriptors[position]
        position += 1
        size = 0
        for _ in range(4):
            if position >= len(descriptors):
                raise Fmp4Error("the esds box is truncated")
            byte = descriptors[position]
            position += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        if tag == 0x03:  # ES_Descriptor: ES_ID, flags, then optional fields, then nested descriptors
            flags = descriptors[position + 2]
            position += 3 + (2 if flags & 0x80 else 0)  # ES_ID, flags, dependsOn_ES_ID
            if flags & 0x40:
                position += 1 + descriptors[position]  # URL
            position += 2 if flags & 0x20 else 0  # OCR_ES_Id
        elif tag == 0x04:  # DecoderConfigDescriptor: 13 bytes, then nested descriptors
            position += 13
        elif tag == 0x05:
            return descriptors[position:position + size]
        else:
            position += size
    raise Fmp4Error("the esds box has no AudioSpecificConfig")


@dataclass(frozen=True)
class _Defaults:
    duration: int = 0
    size: int = 0
    flags: int = 0


def parse_fragments(data: bytes, tracks: Tracks) -> list[Sample]:
    """The samples of every moof+mdat in ``data`` (no init segment), in storage order."""
    samples: list[Sample] = []
    known = {track.track_id for track in (tracks.video, tracks.audio) if track is not None}
    for moof in _find(data, [b"moof"]):
        for traf in _find(data, [b"traf"], moof.body, moof.end):
            samples += _track_fragment(data, moof, traf, known)
    return samples


def _track_fragment(data: bytes, moof: _Box, traf: _Box, known: set[int]) -> list[Sample]:
    tfhd = _one(data, [b"tfhd"], traf.body, traf.end)
    if tfhd is None:
        raise Fmp4Error("a track fragment has no tfhd box")
    flags = int.from_bytes(data[tfhd.body + 1:tfhd.body + 4])
    track_id = struct.unpack_from(">I", data, tfhd.body + 4)[0]
    if track_id not in known:
        return []
    position = tfhd.body + 8
    base = moof.start  # default-base-is-moof, and the base of a first trun without base-data-offset
    if flags & 0x01:
        base = struct.unpack_from(">Q", data, position)[0]
        position += 8
    if flags & 0x02:
        position += 4  # sample-description-index: one entry per track here
    defaults = _Defaults()
    if flags & 0x08:
        defaults = _Defaults(struct.unpack_from(">I", data, position)[0], defaults.size, defaults.flags)
        position += 4
    if flags & 0x10:
        defaults = _Defaults(defaults.duration, struct.unpack_from(">I", data, position)[0], defaults.flags)
        position += 4
    if flags & 0x20:
        defaults = _Defaults(defaults.duration, defaults.size, struct.unpack_from(">I", data, position)[0])
    tfdt = _one(data, [b"tfdt"], traf.body, traf.end)
    if tfdt is None:
        raise Fmp4Error(f"track {track_id}'s fragment has no tfdt (base decode time)")
    time = struct.unpack_from(">Q" if data[tfdt.body] == 1 else ">I", data, tfdt.body + 4)[0]
    samples: list[Sample] = []
    for trun in _find(data, [b"trun"], traf.body, traf.end):
        run = _track_run(data, trun, track_id, base, time, defaults)
        samples += run
        time = run[-1].decode_time + run[-1].duration if run else time
    return samples


def _track_run(data: bytes, trun: _Box, track_id: int, base: int, time: int, defaults: _Defaults) -> list[Sample]:
    flags = int.from_bytes(data[trun.body + 1:trun.body + 4])
    count = struct.unpack_from(">I", data, trun.body + 4)[0]
    position = trun.body + 8
    offset = 0
    if flags & 0x01:
        offset = struct.unpack_from(">i", data, position)[0]
        position += 4
    first_flags: int | None = None
    if flags & 0x04:
        first_flags = struct.unpack_from(">I", data, position)[0]
        position += 4
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    if position + 4 * len(fields) * count > trun.end:
        raise Fmp4Error(f"track {track_id}'s trun lists more samples than it holds")
    cursor = base + offset
    samples: list[Sample] = []
    for index in range(count):
        values = dict(zip(fields, struct.unpack_from(f">{len(fields)}I", data, position), strict=True))
        position += 4 * len(fields)
        size = values.get(0x200, defaults.size)
        sample_flags = first_flags if index == 0 and first_flags is not None else values.get(0x400, defaults.flags)
        cto = values.get(0x800, 0)
        if cto >= 0x80000000:  # signed in version 1
            cto -= 1 << 32
        if cursor + size > len(data):
            raise Fmp4Error(f"track {track_id}'s sample {index} lies past the end of the chunk")
        duration = values.get(0x100, defaults.duration)
        samples.append(Sample(track_id, time, cto, duration, data[cursor:cursor + size],
                              not sample_flags & _SAMPLE_IS_NON_SYNC))
        cursor += size
        time += duration
    return samples


def nal_units(sample: bytes, length_size: int) -> list[bytes]:
    """The NAL units of a length-prefixed (AVCC) access unit."""
    units: list[bytes] = []
    position = 0
    while position < len(sample):
        if position + length_size > len(sample):
            raise Fmp4Error("an H.264 sample ends inside a NAL length prefix")
        size = int.from_bytes(sample[position:position + length_size])
        position += length_size
        if size == 0 or position + size > len(sample):
            raise Fmp4Error(f"an H.264 sample's NAL unit of {size} bytes overruns it")
        units.append(sample[position:position + size])
        position += size
    return units


def annex_b(sample: Sample, video: VideoTrack) -> bytes:
    """The access unit with start codes, the track's SPS and PPS first if it holds an IDR and lacks them."""
    units = nal_units(sample.data, video.nal_length_size)
    kinds = {unit[0] & 0x1F for unit in units}
    if NAL_IDR in kinds and NAL_SPS not in kinds:
        units = [*video.sps, *video.pps, *units]
    return b"".join(_START_CODE + unit for unit in units)


def is_idr(sample: Sample, video: VideoTrack) -> bool:
    return any(unit[0] & 0x1F == NAL_IDR for unit in nal_units(sample.data, video.nal_length_size))


class RequestDemuxer:
    """One request's chunks in ``seq`` order → their samples; the first chunk must carry the init segment."""

    def __init__(self) -> None:
        self.init_segment: bytes | None = None
        self.tracks: Tracks | None = None

    def feed(self, chunk: bytes) -> list[Sample]:
        init, fragments = split_init_segment(chunk)
        if self.tracks is None:
            if not init:
                raise Fmp4Error("the request's first chunk (with the init segment) was not seen")
            self.init_segment = init
            self.tracks = parse_init_segment(init)
        return parse_fragments(fragments, self.tracks) if fragments else []

    def seconds(self, sample: Sample) -> float:
        """The sample's presentation time on its request's timeline (priming before 0)."""
        assert self.tracks is not None
        track = self.tracks.video if self.tracks.video and sample.track_id == self.tracks.video.track_id \
            else self.tracks.audio
        assert track is not None
        priming = track.priming if isinstance(track, AudioTrack) else 0
        return (sample.decode_time + sample.composition_offset - priming) / track.timescale
