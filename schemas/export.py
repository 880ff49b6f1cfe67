"""Writes the JSON Schema of every topic and WebSocket message to ``schemas/json/`` (run after a change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas import idle_clip, registration, requests, session, speech, websocket

SCHEMA_DIR = Path(__file__).parent / "json"


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema, one per topic message and per WebSocket direction."""
    return {
        "avatar.requests.v1.json": requests.TextRequest.model_json_schema(),
        "avatar.registrations.v1.json": registration.RegistrationJobMessage.model_json_schema(),
        "avatar.idle-clips.v1.json": idle_clip.IdleClipRequest.model_json_schema(),
        "avatar.speech.v3.meta.json": speech.SpeechSegmentMeta.model_json_schema(),
        "avatar.speech.v4.error.json": speech.SpeechError.model_json_schema(),
        "avatar.session.v1.meta.json": TypeAdapter(session.SessionEventMeta).json_schema(),
        "ws.client.v1.json": TypeAdapter(websocket.ClientMessage).json_schema(),
        "ws.server.v1.json": TypeAdapter(websocket.ServerMessage).json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in all_schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema), encoding="utf-8")
        print(f"wrote schemas/json/{name}")


if __name__ == "__main__":
    main()
