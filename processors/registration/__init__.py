"""Avatar registration's pure core: sniff and decode an upload, find and check its face, build face data."""

from processors.registration.analyse import (
    RegistrationLimits,
    RegistrationResult,
    analyse_upload,
    default_analyser,
)
from processors.registration.errors import RegistrationError
from processors.registration.faces import DetectedFace, DlibFaceAnalyser, FaceAnalyser
from processors.registration.media import sniff_media_kind
from processors.registration.quality import QualityCheck, QualityReport, QualityThresholds

__all__ = [
    "DetectedFace",
    "DlibFaceAnalyser",
    "FaceAnalyser",
    "QualityCheck",
    "QualityReport",
    "QualityThresholds",
    "RegistrationError",
    "RegistrationLimits",
    "RegistrationResult",
    "analyse_upload",
    "default_analyser",
    "sniff_media_kind",
]
