"""The registration worker's pure core: a job's upload in, face data or a refusal out, with monotonic progress;
and the gateway's status for every code the core can write."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from skimage import data

from gateway.registration_status import HTTP_STATUS, http_status
from infra.registration_jobs import JobForm
from processors.registration import core
from processors.registration.analyse import RegistrationLimits, default_analyser
from processors.registration.errors import REFUSAL_CODES
from processors.registration.faces import FaceAnalyser
from tests.unit.test_registration_media import png_bytes

FORM = JobForm(user_id="alice", name="Astronaut", filename="face.png")


@pytest.fixture(scope="module")
def analyser() -> FaceAnalyser:
    return default_analyser()


def run(upload: bytes, analyser: FaceAnalyser) -> tuple[core.Registered | core.Refused, list[tuple[str, str, float]]]:
    seen: list[tuple[str, str, float]] = []
    outcome = core.register(FORM, upload, avatar_id="av-core-test", analyser=analyser, limits=RegistrationLimits(),
                            progress=lambda state, stage, fraction: seen.append((state, stage, fraction)))
    return outcome, seen


def test_a_photo_registers_with_its_summary_and_progress_that_only_grows(analyser: FaceAnalyser) -> None:
    outcome, seen = run(png_bytes(np.asarray(data.astronaut(), dtype=np.uint8)), analyser)
    assert isinstance(outcome, core.Registered)
    assert outcome.result.face_data.avatar_id == "av-core-test" and outcome.result.frame_count == 1
    assert outcome.summary["avatar_id"] == "av-core-test" and outcome.summary["analysis"]["media_kind"] == "image"
    assert outcome.summary["report"] == outcome.result.report.to_dict()
    fractions = [fraction for _, _, fraction in seen]
    assert fractions == sorted(fractions) and fractions[-1] == core.ANALYSIS_SHARE
    assert seen[0][:2] == ("analysing", "decode") and seen[-1][:2] == ("storing", "store")


def test_a_photo_without_a_face_is_a_refusal_with_its_code_and_report(analyser: FaceAnalyser) -> None:
    outcome, seen = run(png_bytes(np.asarray(data.coffee(), dtype=np.uint8)), analyser)
    assert isinstance(outcome, core.Refused)
    assert outcome.error["code"] == "no_face" and outcome.error["report"]["passed"] is False
    assert all(state == "analysing" for state, _, _ in seen), "a refused upload never reaches storing"


def test_a_job_is_refused_once_more_workers_died_on_it_than_allowed() -> None:
    assert all(core.check_attempts(n) is None for n in range(1, core.MAX_ATTEMPTS + 1))
    refused = core.check_attempts(core.MAX_ATTEMPTS + 1)
    assert refused is not None and refused.error["code"] == "registration_crashed"


def test_a_staged_upload_must_match_the_size_and_digest_the_job_names() -> None:
    upload = b"\x89PNG\r\n\x1a\nrest"
    digest = hashlib.sha256(upload).hexdigest()
    assert core.check_upload(upload, digest, expected_bytes=len(upload), expected_sha256=digest) is None
    shorter = core.check_upload(upload, digest, expected_bytes=len(upload) + 1, expected_sha256=digest)
    other = core.check_upload(upload, digest, expected_bytes=len(upload), expected_sha256="0" * 64)
    assert shorter is not None and other is not None and shorter.error["code"] == "upload_mismatch"


def test_the_gateway_has_a_status_for_every_code_the_worker_writes() -> None:
    written = REFUSAL_CODES | {core.name_taken("a", "b").error["code"], core.internal_error().error["code"],
                               "registration_crashed", "upload_mismatch"}
    assert written <= HTTP_STATUS.keys(), f"codes without an HTTP status: {sorted(written - HTTP_STATUS.keys())}"
    assert (http_status("no_face"), http_status("name_taken"), http_status("file_too_large")) == (422, 409, 413)
    assert http_status("a_code_nobody_writes") == 500
