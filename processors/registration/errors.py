"""Why an avatar upload was refused: one exception with a machine code, a human message and an HTTP status."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processors.registration.quality import QualityReport

# The HTTP status each code maps to, so every caller answers the same refusal the same way.
HTTP_STATUS: dict[str, int] = {
    "empty_file": 400,
    "corrupt_file": 400,
    "unsupported_media_type": 415,
    "file_too_large": 413,
    "image_too_large": 413,
    "video_too_long": 413,
    "no_decodable_frames": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "face_lost": 422,
    "face_too_small": 422,
    "too_blurry": 422,
    "extreme_pose": 422,
    "mouth_not_visible": 422,
    "mouth_occluded": 422,
    "too_dark": 422,
    "too_bright": 422,
    "poor_exposure": 422,
}


class RegistrationError(Exception):
    """An upload that cannot become an avatar; ``report`` is set when the face analysis got that far."""

    def __init__(self, code: str, message: str, *, report: QualityReport | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_STATUS.get(code, 422)
        self.report = report

    def __repr__(self) -> str:
        return f"RegistrationError(code={self.code!r}, message={self.message!r})"
