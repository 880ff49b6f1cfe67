"""Reads a multipart upload from the request stream chunk by chunk, refusing it the moment a limit is crossed."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

# Multipart framing around the file (boundaries, part headers, the small text fields) never needs more.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 16
MAX_FILENAME_CHARS = 255


class UploadError(Exception):
    """The request is not an acceptable upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Upload:
    """The text fields and the one file of a multipart form, the file held in memory (it is size-bounded)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: bytearray = field(default_factory=bytearray)
    filename: str | None = None
    has_file: bool = False


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _UploadParser:
    """python-multipart callbacks that fill an Upload and enforce its limits as the bytes arrive."""

    def __init__(self, boundary: bytes, *, file_field: str, text_fields: frozenset[str], max_file_bytes: int,
                 on_file_head: Callable[[bytes], None] | None, head_bytes: int) -> None:
        self.upload = Upload()
        self.file_field = file_field
        self.text_fields = text_fields
        self.max_file_bytes = max_file_bytes
        self.on_file_head = on_file_head
        self.head_bytes = head_bytes
        self.finished = False
        self._head_checked = False
        self._parts = 0
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as error:
            raise UploadError(400, "malformed_upload", f"The multipart body cannot be parsed: {error}.") from None

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise UploadError(400, "malformed_upload", f"The form has more than {MAX_PARTS} parts.")
        self._part = _Part()

    def _header_end(self) -> None:
        self._part.headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        part = self._part
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if part.name == self.file_field:
            if self.upload.has_file:
                raise UploadError(400, "invalid_field", f"Send exactly one '{self.file_field}' part.")
            part.is_file = True
            self.upload.has_file = True
            self.upload.filename = safe_filename(options.get(b"filename"))
        elif part.name not in self.text_fields:
            expected = ", ".join(sorted({self.file_field, *self.text_fields}))
            raise UploadError(400, "unexpected_field",
                              f"Unexpected form field '{part.name[:64]}'; expected {expected}.")
        elif part.name in self.upload.fields:
            raise UploadError(400, "invalid_field", f"The field '{part.name}' is sent twice.")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.is_file:
            self._file_data(data[start:end])
            return
        self._part.data.extend(data[start:end])
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise UploadError(413, "field_too_large", f"The field '{self._part.name}' is over {MAX_FIELD_BYTES} bytes.")

    def _file_data(self, data: bytes) -> None:
        file = self.upload.file
        if len(file) + len(data) > self.max_file_bytes:
            raise file_too_large(self.max_file_bytes)
        file.extend(data)
        if not self._head_checked and len(file) >= self.head_bytes:
            self._check_head()

    def _check_head(self) -> None:
        self._head_checked = True
        if self.on_file_head is not None and self.upload.file:
            self.on_file_head(bytes(self.upload.file[: self.head_bytes]))

    def _part_end(self) -> None:
        part = self._part
        if part.is_file:
            if not self._head_checked:
                self._check_head()
            return
        try:
            self.upload.fields[part.name] = part.data.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(400, "invalid_field", f"The field '{part.name}' is not UTF-8 text.") from None

    def _end(self) -> None:
        self.finished = True


async def read_upload(
    request: Request,
    *,
    max_file_bytes: int,
    file_field: str = "file",
    text_fields: frozenset[str] = frozenset(),
    on_file_head: Callable[[bytes], None] | None = None,
    head_bytes: int = 64,
) -> Upload:
    """Stream ``request``'s multipart body into an Upload without ever holding more than the limits allow.

    A declared Content-Length over the limit is refused before any byte is read; an undeclared or lying
    one is refused as soon as the file passes ``max_file_bytes``. ``on_file_head`` sees the file's first
    ``head_bytes`` as soon as they arrive, so a wrong file type is refused before the rest is uploaded.
    """
    boundary = multipart_boundary(request.headers.get("content-type", ""))
    check_declared_length(request.headers.get("content-length"), max_file_bytes)
    reader = _UploadParser(boundary, file_field=file_field, text_fields=text_fields, max_file_bytes=max_file_bytes,
                           on_file_head=on_file_head, head_bytes=head_bytes)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_file_bytes + FORM_OVERHEAD_BYTES:
                raise file_too_large(max_file_bytes)
            reader.write(chunk)
    except ClientDisconnect:
        raise UploadError(400, "malformed_upload", "The upload ended before the form was complete.") from None
    if not reader.finished:
        raise UploadError(400, "malformed_upload", "The upload ended before the form's closing boundary.")
    return reader.upload


def multipart_boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(415, "not_multipart",
                          "Send the upload as multipart/form-data (fields: file, avatar_name, user_id, description).")
    return boundary


def check_declared_length(content_length: str | None, max_file_bytes: int) -> None:
    if content_length is None:
        return  # chunked: the stream itself is counted
    if not content_length.isdigit():
        raise UploadError(400, "malformed_upload", "The Content-Length header is not a number.")
    if int(content_length) > max_file_bytes + FORM_OVERHEAD_BYTES:
        raise file_too_large(max_file_bytes, declared=int(content_length))


def file_too_large(max_file_bytes: int, declared: int | None = None) -> UploadError:
    size = f" ({declared / 1e6:.1f} MB)" if declared is not None else ""
    return UploadError(413, "file_too_large", f"The upload is too large{size}; at most {max_file_bytes / 1e6:.0f} MB.")


def safe_filename(raw: bytes | None) -> str | None:
    """The upload's file name for messages only, never a path: directories and control characters go."""
    if not raw:
        return None
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:MAX_FILENAME_CHARS] or None
