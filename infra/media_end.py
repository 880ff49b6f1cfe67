"""Where an upload's own data ends, by its format's structure (JPEG EOI, PNG IEND, GIF trailer; an MP4/MOV's
top-level boxes, a WebM's Segment), so bytes appended after it (a ZIP, a script: a polyglot file) are cut off
before it is stored; the picture or video decodes exactly as before."""

from __future__ import annotations

import re

from infra.media_kind import MediaKind

_PNG_SIGNATURE_BYTES = 8
_JPEG_RESTART_OR_STUFFING = frozenset({0x00, 0x01, *range(0xD0, 0xD8)})  # inside entropy-coded data
# Top-level ISO-BMFF box types are four letters, digits or spaces ("ftyp", "moov", "mdat", "free", "qt  "…).
_BOX_TYPE_RE = re.compile(rb"[A-Za-z0-9 ]{4}")
_MOVIE_BOXES = frozenset({b"moov", b"mdat"})
_EBML_HEADER_ID = b"\x1a\x45\xdf\xa3"
_MATROSKA_SEGMENT_ID = b"\x18\x53\x80\x67"


def media_end(data: bytes, kind: MediaKind) -> int | None:
    """The offset just past the file's own data, walking its structure (an EXIF thumbnail's own EOI, inside a
    segment, is skipped); None when its end cannot be told (truncated, or a WebM streamed with an unknown size):
    left as it is, to the decoder to refuse or read."""
    if kind == "jpeg":
        return _jpeg_end(data)
    if kind == "png":
        return _png_end(data)
    if kind == "gif":
        return _gif_end(data)
    if kind in ("mp4", "mov"):
        return _iso_bmff_end(data)
    return _matroska_end(data)


def without_trailing_bytes(data: bytes, kind: MediaKind) -> bytes:
    """``data`` up to the end its format declares; unchanged when that end cannot be told."""
    end = media_end(data, kind)
    return data if end is None else data[:end]


def _jpeg_end(data: bytes) -> int | None:
    """Marker segments by their lengths; after a start of scan, the entropy-coded data up to the next marker
    (progressive files have several scans, with tables between them), until EOI."""
    pos = 2  # after SOI
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker in _JPEG_RESTART_OR_STUFFING:
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scan_end = _entropy_coded_end(data, pos)
            if scan_end is None:
                return None
            pos = scan_end
    return None


def _entropy_coded_end(data: bytes, pos: int) -> int | None:
    """The offset of the first marker after a scan's data (0xFF followed by neither 0x00 nor a restart)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return None
        if data[pos + 1] in _JPEG_RESTART_OR_STUFFING or data[pos + 1] == 0xFF:
            pos += 1 if data[pos + 1] == 0xFF else 2
            continue
        return pos


def _png_end(data: bytes) -> int | None:
    """Chunk by chunk (length, type, data, CRC) until IEND."""
    pos = _PNG_SIGNATURE_BYTES
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        pos += 12 + length
        if chunk_type == b"IEND":
            return pos if pos <= len(data) else None
    return None


def _gif_end(data: bytes) -> int | None:
    """Header, screen descriptor, colour table, then blocks (extensions, images with their sub-blocks) until the
    0x3B trailer."""
    if len(data) < 13:
        return None
    pos = 13 + _colour_table_bytes(data[10])
    while pos < len(data):
        introducer = data[pos]
        if introducer == 0x3B:
            return pos + 1
        if introducer == 0x21:  # extension: label, then sub-blocks
            pos = _after_sub_blocks(data, pos + 2)
        elif introducer == 0x2C:  # image descriptor (10 bytes), local colour table, LZW code size, sub-blocks
            if pos + 10 > len(data):
                return None
            pos = _after_sub_blocks(data, pos + 10 + _colour_table_bytes(data[pos + 9]) + 1)
        else:
            return None
        if pos < 0:
            return None
    return None


def _colour_table_bytes(flags: int) -> int:
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _after_sub_blocks(data: bytes, pos: int) -> int:
    """The offset after a chain of sub-blocks (each a length byte and that many bytes, ended by a 0), or -1."""
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return -1


def _iso_bmff_end(data: bytes) -> int | None:
    """Top-level boxes by their 32- or 64-bit sizes (size 0: to the end of the file), up to the first that is no
    box (its type not four letters or digits) or runs past the data. What came before is the movie only if it
    holds a whole ``moov`` and ``mdat``; otherwise the file is truncated and left alone."""
    pos, seen = 0, set[bytes]()
    while pos + 8 <= len(data):
        size, box_type, header = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8], 8
        if not _BOX_TYPE_RE.fullmatch(box_type):
            break
        if size == 1:  # the real size follows as 64 bits
            if pos + 16 > len(data):
                break
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            return len(data)  # the last box, declared to run to the end: nothing after it can be told apart
        if size < header or pos + size > len(data):
            break
        seen.add(box_type)
        pos += size
    return pos if pos == len(data) or seen >= _MOVIE_BOXES else None


def _matroska_end(data: bytes) -> int | None:
    """The EBML header element, then the Segment element, which holds the whole movie: its end is the file's.
    A Segment of unknown size (written by a streaming muxer) or running past the data gives None."""
    header = _ebml_element(data, 0)
    if header is None or header[0] != _EBML_HEADER_ID or header[2] is None:
        return None
    segment = _ebml_element(data, header[1] + header[2])
    if segment is None or segment[0] != _MATROSKA_SEGMENT_ID or segment[2] is None:
        return None
    end = segment[1] + segment[2]
    return end if end <= len(data) else None


def _ebml_element(data: bytes, pos: int) -> tuple[bytes, int, int | None] | None:
    """(element ID, where its data starts, its data size or None when unknown) of the element at ``pos``."""
    id_length = _vint_length(data, pos, max_length=4)
    if id_length is None:
        return None
    size_pos = pos + id_length
    size_length = _vint_length(data, size_pos, max_length=8)
    if size_length is None:
        return None
    value = int.from_bytes(data[size_pos : size_pos + size_length], "big") & ((1 << (7 * size_length)) - 1)
    unknown = value == (1 << (7 * size_length)) - 1  # all value bits set: "until the parent ends"
    return data[pos:size_pos], size_pos + size_length, None if unknown else value


def _vint_length(data: bytes, pos: int, *, max_length: int) -> int | None:
    """How many bytes the EBML variable-size integer at ``pos`` takes (its first byte's leading zeros + 1)."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()
    return length if length <= max_length and pos + length <= len(data) else None
