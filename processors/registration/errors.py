"""Why an avatar upload was refused: one exception with a machine code and a human message."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processors.registration.quality import QualityReport

# Every code an analysis refuses an upload with. The processor writes the code; which HTTP status answers it
# is the gateway's business (gateway/registration_status.py), so the processor knows nothing of HTTP.
REFUSAL_CODES = frozenset({
    "empty_file", "corrupt_file", "unsupported_media_type", "file_too_large", "image_too_large", "video_too_long",
    "no_decodable_frames", "no_face", "multiple_faces", "face_lost", "face_too_small", "too_blurry", "extreme_pose",
    "mouth_not_visible", "mouth_occluded", "too_dark", "too_bright", "poor_exposure",
})


class RegistrationError(Exception):
    """An upload that cannot become an avatar; ``report`` is set when the face analysis got that far."""

    def __init__(self, code: str, message: str, *, report: QualityReport | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.report = report

    def __repr__(self) -> str:
        return f"RegistrationError(code={self.code!r}, message={self.message!r})"
