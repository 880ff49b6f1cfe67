"""Names an upload's format from its first bytes, so the gateway refuses a wrong file before the rest arrives
and the registration worker decodes it with the right demuxer; file names are never trusted."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["jpeg", "png", "gif", "mp4", "mov", "webm"]

SNIFF_BYTES = 64  # every signature below is decided within this many leading bytes

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_EBML_SIGNATURE = b"\x1a\x45\xdf\xa3"
_QUICKTIME_LEGACY_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# ISO-BMFF brands that are still images or raw photos, not movies: refused with a useful hint.
_STILL_BMFF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"crx ")


class UnsupportedMedia(ValueError):
    """The head is no format we accept; ``code`` is ``empty_file`` or ``unsupported_media_type``."""

    def __init__(self, code: Literal["empty_file", "unsupported_media_type"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sniff_media_kind(head: bytes) -> MediaKind:
    """Name the format from its leading bytes (pass at least ``SNIFF_BYTES``), or raise UnsupportedMedia."""
    if not head:
        raise UnsupportedMedia("empty_file", "The uploaded file is empty (0 bytes).")
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(_EBML_SIGNATURE):
        return _sniff_ebml(head)
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head[8:12])
    if head[4:8] in _QUICKTIME_LEGACY_ATOMS:
        return "mov"  # QuickTime files written before ftyp existed start straight with an atom
    raise UnsupportedMedia(
        "unsupported_media_type",
        f"Unrecognised file content ({_describe_head(head)}); upload a JPEG or PNG photo, a GIF, "
        "or an MP4, MOV or WebM video.",
    )


def _sniff_ebml(head: bytes) -> MediaKind:
    # The DocType element comes within the first few dozen bytes of the EBML header.
    if b"webm" in head[:SNIFF_BYTES]:
        return "webm"
    raise UnsupportedMedia("unsupported_media_type",
                           "Matroska (.mkv) files are not supported; upload MP4, MOV or WebM.")


def _sniff_iso_bmff(brand: bytes) -> MediaKind:
    if brand in _STILL_BMFF_BRANDS:
        raise UnsupportedMedia(
            "unsupported_media_type",
            f"HEIC/AVIF/raw images (brand {brand.decode('latin-1').strip()!r}) are not supported; "
            "upload a JPEG or PNG.",
        )
    return "mov" if brand == b"qt  " else "mp4"


def _describe_head(head: bytes) -> str:
    if head.lstrip()[:1] in (b"<", b"{", b"[") or all(32 <= b < 127 or b in (9, 10, 13) for b in head[:32]):
        return "it looks like text"
    return f"starts with bytes {head[:8].hex(' ')}"
