"""Registers the bundled sample avatar (scikit-image's public-domain astronaut) when a registration worker
starts, unless a readable current copy is stored."""

from __future__ import annotations

import logging

import cv2
import psycopg
from skimage import data as skimage_data

from infra.audit import AVATAR_REGISTERED, AuditActor, AuditEntry
from infra.avatar_store import AvatarStore
from infra.crypto import FaceDataDecryptionError
from processors.registration.analyse import analyse_upload
from schemas.avatar import FACE_DATA_VERSION

log = logging.getLogger(__name__)
SAMPLE_USER = "system"


def sample_png() -> bytes:
    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode the sample avatar")
    return png.tobytes()


def ensure_sample_avatar(store: AvatarStore, avatar_id: str) -> bool:
    """Register the sample unless a current-format copy readable with today's keys is stored; returns True if
    it registered now (audited as the system's registration, in the same transaction)."""
    version = store.current_version(avatar_id)
    if version == FACE_DATA_VERSION and _readable(store, avatar_id):
        return False
    cause = "missing" if version is None else "unreadable" if version == FACE_DATA_VERSION else "older_format"
    source = sample_png()
    result = analyse_upload(source, avatar_id=avatar_id)
    # An admin's deletion of the sample is in the audit log; so is its coming back, or the log would show an
    # avatar deleted and then in use without anyone registering it.
    audit = AuditEntry(AVATAR_REGISTERED, AuditActor.system(), avatar_id=avatar_id, subject_user_id=SAMPLE_USER,
                       details={"sample": True, "reason": "bundled sample avatar (re-)created at start-up",
                                "previous_copy": cause, "media_kind": result.media_kind,
                                "upload_bytes": len(source)})
    try:
        store.save(result.face_data, user_id=SAMPLE_USER, name="Sample (astronaut)",
                   description="Eileen Collins, NASA (public domain), shipped with scikit-image",
                   media_kind=result.media_kind, source=source, source_width=result.source_width,
                   source_height=result.source_height, quality_report=result.report.to_dict(), replace=True,
                   audit=audit)
    except psycopg.errors.UniqueViolation:
        # Workers started together each found it missing; the one that stored it first is as good as this one.
        log.info("sample avatar registered by another worker meanwhile", extra={"avatar_id": avatar_id})
        return False
    log.info("sample avatar registered", extra={"avatar_id": avatar_id, "analysis_ms": result.analysis_ms})
    return True


def _readable(store: AvatarStore, avatar_id: str) -> bool:
    # FACE_DATA_KEYS replaced without a rotation: the bundled sample can always be analysed again, unlike a
    # user's avatar, which stays unreadable until the old key is put back.
    try:
        store.first_frame(avatar_id)
    except FaceDataDecryptionError:
        log.warning("stored sample avatar unreadable with FACE_DATA_KEYS; registering it again",
                    extra={"avatar_id": avatar_id})
        return False
    return True
