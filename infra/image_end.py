"""Where an image file's own data ends (JPEG EOI, PNG IEND, GIF trailer), so bytes appended after it (a ZIP, a
script: a polyglot file) are cut off before the upload is stored; the image decodes exactly as before."""

from __future__ import annotations

from infra.media_kind import MediaKind

_PNG_SIGNATURE_BYTES = 8
_JPEG_RESTART_OR_STUFFING = frozenset({0x00, 0x01, *range(0xD0, 0xD8)})  # inside entropy-coded data


def image_end(data: bytes, kind: MediaKind) -> int | None:
    """The offset just past the image's end marker, walking its structure (an EXIF thumbnail's own EOI, inside a
    segment, is skipped); None for a video, or an image whose end marker is missing (truncated: left to the
    decoder to refuse)."""
    if kind == "jpeg":
        return _jpeg_end(data)
    if kind == "png":
        return _png_end(data)
    if kind == "gif":
        return _gif_end(data)
    return None


def without_trailing_bytes(data: bytes, kind: MediaKind) -> bytes:
    """``data`` up to its image's end marker; unchanged for a video or an image without one."""
    end = image_end(data, kind)
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
