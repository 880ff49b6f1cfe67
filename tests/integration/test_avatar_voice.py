"""An avatar's default voice on the running service: stored at registration, spoken with, overridden, changed.

What the avatar said is read back from ``avatar.speech``: espeak-ng is deterministic, so two requests spoken with
the same backend and voice carry the very same samples, and another voice gives other samples.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import websockets
from skimage import data

from infra.settings import Settings
from schemas.speech import SpeechSegment
from tests.integration.stack import RunningStack
from tests.integration.test_tts_processor import speech_until
from tests.unit.test_registration_media import png_bytes

pytestmark = pytest.mark.integration
TEXT = "Good morning."


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    return png_bytes(np.asarray(data.astronaut(), dtype=np.uint8))


def register(stack: RunningStack, photo: bytes, **voice: str) -> httpx.Response:
    fields = {"avatar_name": f"voice-{uuid.uuid4().hex[:8]}", "user_id": "system", **voice}
    return httpx.post(f"{stack.http}/avatar/register", data=fields, timeout=120,
                      files={"file": ("face.png", photo, "image/png")})


@pytest.fixture(scope="module")
def f3_avatar(stack: RunningStack, astronaut_png: bytes) -> str:
    response = register(stack, astronaut_png, tts="espeak", voice="f3")
    assert response.status_code == 201, response.text
    return str(response.json()["avatar_id"])


@pytest.fixture(scope="module")
def bare_voice_avatar(stack: RunningStack, astronaut_png: bytes) -> dict[str, Any]:
    """Registered with a voice but no backend."""
    response = register(stack, astronaut_png, voice="m3")
    assert response.status_code == 201, response.text
    avatar: dict[str, Any] = response.json()["avatar"]
    return avatar


def render(stack: RunningStack, avatar_id: str, **choice: str) -> str:
    """The request id of one REST render of TEXT, once its MP4 is back."""
    response = httpx.post(f"{stack.http}/avatar/process", timeout=120,
                          json={"text": TEXT, "avatar_id": avatar_id, "language": "en", **choice})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


async def say_over_websocket(stack: RunningStack, avatar_id: str, *inputs: dict[str, str]) -> list[str]:
    """The request ids of ``inputs`` sent as text_input in one session, once each has its last chunk."""
    async with websockets.connect(stack.ws, max_size=1 << 24) as ws:
        await ws.send(json.dumps({"type": "avatar_selection", "avatar_id": avatar_id}))
        assert json.loads(await ws.recv())["type"] == "session_ready"
        request_ids: list[str] = []
        finished: set[str] = set()
        for extra in inputs:
            await ws.send(json.dumps({"type": "text_input", "text": TEXT, "language": "en", **extra}))
        async with asyncio.timeout(120):
            while len(finished) < len(inputs):
                message: dict[str, Any] = json.loads(await ws.recv())
                assert message["type"] != "error", message
                if message["type"] == "request_accepted":
                    request_ids.append(message["request_id"])
                elif message["type"] == "video_chunk" and message["is_last"]:
                    finished.add(message["request_id"])
        return request_ids


def spoken(settings: Settings, *request_ids: str) -> list[tuple[list[str | None], list[str | None]]]:
    """Per request: the backend and the voice of each segment, as the TTS wrote them in ``avatar.speech``.

    The voice is read from the segment, not inferred from the samples: espeak-ng in-process keeps state
    between calls, so the same text and voice need not give the same bytes twice.
    """
    wanted = set(request_ids)

    def complete(segments: list[SpeechSegment]) -> bool:
        return wanted <= {s.meta.request_id for s in segments if s.meta.is_last}

    segments = speech_until(settings, complete)
    out = []
    for request_id in request_ids:
        mine = sorted((s for s in segments if s.meta.request_id == request_id), key=lambda s: s.meta.segment_index)
        out.append(([s.meta.engine for s in mine], [s.meta.voice for s in mine]))
    return out


def test_a_registered_default_voice_is_stored_and_shown_in_info_and_list(stack: RunningStack, f3_avatar: str) -> None:
    info = httpx.get(f"{stack.http}/avatar/{f3_avatar}/info").json()
    assert (info["tts"], info["voice"]) == ("espeak", "f3")
    listed = {a["avatar_id"]: a for a in httpx.get(f"{stack.http}/avatar/list").json()["avatars"]}
    assert (listed[f3_avatar]["tts"], listed[f3_avatar]["voice"]) == ("espeak", "f3")
    assert (listed["sample"]["tts"], listed["sample"]["voice"]) == (None, None)


def test_a_voice_registered_without_a_backend_is_stored_as_the_deployment_backend_voice(
        bare_voice_avatar: dict[str, Any]) -> None:
    assert (bare_voice_avatar["tts"], bare_voice_avatar["voice"]) == ("espeak", "m3")


@pytest.mark.parametrize(("voice", "code"), [
    ({"tts": "openai", "voice": "nova"}, "tts_unavailable"),  # known, but not in TTS_ENGINE / TTS_EXTRA_ENGINES
    ({"tts": "espeak", "voice": "../../voices/x"}, "invalid_field"),
    ({"tts": "espeak", "voice": "fa_IR-amir-medium"}, "unknown_voice"),  # a piper voice, not an espeak variant
])
def test_a_default_voice_this_deployment_cannot_speak_is_refused_and_nothing_is_stored(
        stack: RunningStack, astronaut_png: bytes, voice: dict[str, str], code: str) -> None:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{stack.http}/avatar/register", timeout=60,
                          data={"avatar_name": name, "user_id": "system", **voice},
                          files={"file": ("face.png", astronaut_png, "image/png")})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code and response.json()["message"]
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM avatars WHERE name = %s", (name,)).fetchone()
    assert row == (0,)


def test_an_avatar_with_a_default_voice_speaks_with_it_over_rest_and_websocket(
        stack: RunningStack, settings: Settings, f3_avatar: str) -> None:
    by_default = render(stack, f3_avatar)
    [over_websocket] = asyncio.run(say_over_websocket(stack, f3_avatar, {}))
    f3_asked = render(stack, "sample", voice="f3")
    plain = render(stack, "sample")
    default_voice, websocket_voice, f3_voice, plain_voice = spoken(
        settings, by_default, over_websocket, f3_asked, plain)
    assert default_voice[0] and set(default_voice[0]) == {"espeak"}
    assert set(f3_voice[1]) == {"f3"}
    assert default_voice[1] == f3_voice[1], "the avatar's default is exactly espeak's f3"
    assert websocket_voice[1] == f3_voice[1]
    assert set(plain_voice[1]) == {None}, "and not the deployment's default voice"


def test_a_request_naming_its_own_voice_wins_over_the_avatar_default(
        stack: RunningStack, settings: Settings, f3_avatar: str) -> None:
    [overridden_ws] = asyncio.run(say_over_websocket(stack, f3_avatar, {"voice": "m3"}))
    overridden_rest = render(stack, f3_avatar, voice="m3")
    m3_asked = render(stack, "sample", voice="m3")
    f3_asked = render(stack, "sample", voice="f3")
    ws_voice, rest_voice, m3_voice, f3_voice = spoken(settings, overridden_ws, overridden_rest, m3_asked, f3_asked)
    assert set(m3_voice[1]) == {"m3"} and set(f3_voice[1]) == {"f3"}
    assert ws_voice[1] == m3_voice[1] and rest_voice[1] == m3_voice[1]


def test_a_request_naming_a_backend_not_enabled_fails_even_on_an_avatar_with_a_default(
        stack: RunningStack, f3_avatar: str) -> None:
    response = httpx.post(f"{stack.http}/avatar/process", timeout=60,
                          json={"text": TEXT, "avatar_id": f3_avatar, "tts": "openai"})
    assert response.status_code == 422 and response.json()["code"] == "tts_unavailable", response.text


def test_patching_the_default_voice_changes_what_the_avatar_speaks_with_and_is_audited(
        stack: RunningStack, settings: Settings, bare_voice_avatar: dict[str, Any]) -> None:
    avatar_id = bare_voice_avatar["avatar_id"]
    changed = httpx.patch(f"{stack.http}/avatar/{avatar_id}", json={"voice": "f3"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["tts"], changed.json()["voice"]) == ("espeak", "f3")
    after, f3_asked = render(stack, avatar_id), render(stack, "sample", voice="f3")
    after_voice, f3_voice = spoken(settings, after, f3_asked)
    assert set(f3_voice[1]) == {"f3"} and after_voice[1] == f3_voice[1]
    entries = httpx.get(f"{stack.http}/admin/audit", params={"action": "avatar.voice_changed"}).json()["entries"]
    mine = [e for e in entries if e["avatar_id"] == avatar_id]
    assert len(mine) == 1 and mine[0]["details"] == {"from": {"tts": "espeak", "voice": "m3"},
                                                     "to": {"tts": "espeak", "voice": "f3"}}
    cleared = httpx.patch(f"{stack.http}/avatar/{avatar_id}", json={"tts": None, "voice": None})
    assert (cleared.json()["tts"], cleared.json()["voice"]) == (None, None)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"tts": "openai"}, 400, "tts_unavailable"),
    ({"voice": "no-such-variant"}, 400, "unknown_voice"),
    ({"tts": "sam"}, 422, "invalid_request"),
    ({"colour": "blue"}, 422, "invalid_request"),
])
def test_a_default_voice_change_this_deployment_cannot_speak_is_refused_and_nothing_changes(
        stack: RunningStack, f3_avatar: str, body: dict[str, str], status: int, code: str) -> None:
    response = httpx.patch(f"{stack.http}/avatar/{f3_avatar}", json=body)
    assert response.status_code == status and response.json()["code"] == code, response.text
    info = httpx.get(f"{stack.http}/avatar/{f3_avatar}/info").json()
    assert (info["tts"], info["voice"]) == ("espeak", "f3")


def test_patching_an_unknown_avatar_is_a_404(stack: RunningStack) -> None:
    response = httpx.patch(f"{stack.http}/avatar/no-such-avatar", json={"voice": "m3"})
    assert response.status_code == 404 and response.json()["code"] == "unknown_avatar"
