"""Binary framing for Kafka messages that carry media: JSON metadata plus raw bytes, no base64.

Layout: ``b"AVS1"`` | metadata length (uint32, big-endian) | metadata (UTF-8 JSON) | payload bytes.
"""

from __future__ import annotations

import struct

MAGIC = b"AVS1"
_HEADER = struct.Struct(">4sI")


class EnvelopeError(ValueError):
    """The bytes are not a well-formed envelope."""


def pack(metadata_json: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(metadata_json)) + metadata_json + payload


def unpack(message: bytes) -> tuple[bytes, bytes]:
    """Split an envelope into (metadata JSON, payload)."""
    if len(message) < _HEADER.size:
        raise EnvelopeError(f"message of {len(message)} bytes is shorter than the envelope header")
    magic, meta_len = _HEADER.unpack_from(message)
    if magic != MAGIC:
        raise EnvelopeError(f"bad magic {magic!r}, expected {MAGIC!r}")
    end = _HEADER.size + meta_len
    if end > len(message):
        raise EnvelopeError(f"metadata length {meta_len} runs past the end of a {len(message)}-byte message")
    return message[_HEADER.size : end], message[end:]
