"""The HTTP API fuzzed from its own OpenAPI spec (schemathesis): valid and invalid inputs for every operation,
as the admin and without a token. No 5xx, every error is ``{"code","message"}`` JSON, nothing leaks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from gateway.app import create_app
from infra.settings import Settings
from processors.registration.sample import sample_png
from tests.fuzz.conftest import ADMIN_TOKEN, leaks_in

pytestmark = pytest.mark.integration
# The spec is the app's own, built without starting it, so each operation is a test of its own. The generated
# requests go to the real gateway (fuzz_gateway). schemathesis' pytest plugin is not used: it reaches into
# pytest internals that pytest 9 no longer has; its Hypothesis strategies are the public, stable part.
SPEC = create_app(Settings(_env_file=None)).openapi()
OPERATIONS: dict[str, APIOperation] = {
    result.ok().label: result.ok()
    for result in schemathesis.openapi.from_dict(SPEC).get_all_operations()
    if isinstance(result, Ok)
}
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 8}
ANONYMOUS_EXAMPLES = 3
# /ready answers 503 by design while a dependency is missing (here: no processors run): the readiness protocol.
EXPECTED_5XX = {("GET", "/ready"): 503}


def assert_clean_response(response: Any, label: str, method: str = "", path: str = "") -> None:
    """No server error; errors are our JSON shape; no trace, path or SQL anywhere in the body."""
    body = response.content.decode("utf-8", errors="replace")
    assert not leaks_in(body), f"{label}: the body leaks {leaks_in(body)}: {body[:500]}"
    if EXPECTED_5XX.get((method, path)) == response.status_code:
        return
    assert response.status_code < 500, f"{label}: {response.status_code} {body[:500]}"
    if response.status_code >= 400:
        payload = json.loads(body)
        assert isinstance(payload, dict) and set(payload) >= {"code", "message"}, f"{label}: {body[:300]}"
        assert isinstance(payload["code"], str) and isinstance(payload["message"], str), label


def fuzz(operation: APIOperation, base_url: str, mode: GenerationMode, examples: int,
         headers: dict[str, str]) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        assert_clean_response(response, f"{mode.value} {case.method} {case.formatted_path} query={case.query}",
                              case.method, case.formatted_path)

    try:
        call()
    except Unsatisfiable:
        # Only when nothing in the operation can be made invalid (no parameters, or free-form strings).
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_the_spec_lists_every_api_operation() -> None:
    assert {"POST /auth/token", "POST /avatar/register", "GET /avatar/list", "DELETE /avatar/{avatar_id}",
            "GET /admin/audit", "POST /avatar/process"} <= OPERATIONS.keys()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzzed_as_the_admin_no_operation_answers_5xx_or_leaks(label: str, fuzz_gateway: str) -> None:
    for mode, examples in EXAMPLES.items():
        fuzz(OPERATIONS[label], fuzz_gateway, mode, examples, {"Authorization": f"Bearer {ADMIN_TOKEN}"})


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzzed_without_a_token_no_operation_answers_5xx_or_leaks(label: str, fuzz_gateway: str) -> None:
    for mode in EXAMPLES:
        fuzz(OPERATIONS[label], fuzz_gateway, mode, ANONYMOUS_EXAMPLES, {})


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/no/such/route"), ("DELETE", "/health"), ("PUT", "/avatar/list"),
    ("GET", "/static/../../infra/settings.py"),
    ("GET", "/static/%2e%2e/%2e%2e/infra/settings.py"), ("GET", "/avatar/%00/info"), ("POST", "/auth/token"),
    ("GET", "/avatar/" + "x" * 5000 + "/info"), ("GET", "/admin/audit?limit=abc"), ("GET", "/admin/audit?before=-1"),
])
def test_routes_outside_the_spec_and_hostile_paths_get_json_errors(method: str, path: str, fuzz_gateway: str) -> None:
    response = httpx.request(method, fuzz_gateway + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                             content=b"{not json", timeout=30)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert_clean_response(response, f"{method} {path[:60]}")


@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b'{"user_id": ["x"]}', b'{"user_id": "a\\u0000b"}',
                                  b'{"user_id": "' + b"u" * 100_000 + b'"}', b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_malformed_json_bodies_get_json_errors(body: bytes, fuzz_gateway: str) -> None:
    response = httpx.post(f"{fuzz_gateway}/auth/token", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert_clean_response(response, f"POST /auth/token {body[:20]!r}")


# --- the upload form, which the spec cannot describe (it is streamed and parsed by hand) -----------------

HOSTILE_TEXT = st.one_of(st.text(max_size=300), st.sampled_from(
    ["", " ", "\x00", "a\x00b", "../../etc/passwd", "\u202eevil", "x" * 5000, "system", "🙂" * 200,
     "'; DROP TABLE x;--"]))
PNG = sample_png()


@st.composite
def corrupted_png(draw: st.DrawFn) -> bytes:
    """The sample photo truncated and/or with bytes flipped: decoders must refuse it cleanly, or cope."""
    cut = draw(st.integers(0, len(PNG)))
    out = bytearray(PNG[:cut] if draw(st.booleans()) else PNG)
    for position in draw(st.lists(st.integers(0, len(PNG) - 1), max_size=8)):
        if position < len(out):
            out[position] ^= 0xFF
    return bytes(out)


@st.composite
def upload_forms(draw: st.DrawFn) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    fields = {name: draw(HOSTILE_TEXT) for name in ("avatar_name", "user_id", "description", "unexpected")
              if draw(st.booleans())}
    files = []
    if draw(st.integers(0, 3)):
        content = draw(st.one_of(st.binary(max_size=2000), corrupted_png()))
        name = draw(st.sampled_from(["face.png", "face.mp4", "../../x.gif", "a\x00b.jpg", ""]))
        files.append((draw(st.sampled_from(["file", "file", "other"])), (name, content, "image/png")))
    return fields, files


def test_fuzzed_registration_uploads_never_answer_5xx_or_leak(fuzz_gateway: str) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    @given(form=upload_forms())
    def upload(form: tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]) -> None:
        fields, files = form
        response = httpx.post(f"{fuzz_gateway}/avatar/register", data=fields, files=files or None, timeout=60,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert_clean_response(response, f"register fields={sorted(fields)} files={[f[1][0] for f in files]}")

    upload()
