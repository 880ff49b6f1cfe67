"""Client WebSocket messages are parsed strictly, each mistake with its own error code."""

from __future__ import annotations

import pytest

from gateway.speak import Refusal
from gateway.ws import parse_client_message
from schemas.websocket import AvatarSelection, TextInput


def test_avatar_selection_and_text_input_parse() -> None:
    assert parse_client_message('{"type":"avatar_selection","avatar_id":"sample"}') == AvatarSelection(
        type="avatar_selection", avatar_id="sample")
    message = parse_client_message('{"type":"text_input","text":"سلام، حال شما چطور است؟","language":"fa"}')
    assert isinstance(message, TextInput) and message.language == "fa"


@pytest.mark.parametrize(("raw", "code"), [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"text":"hi"}', "unknown_type"),
    ('{"type":"avatar_selection"}', "invalid_message"),
    ('{"type":"avatar_selection","avatar_id":"../etc"}', "invalid_message"),
    ('{"type":"text_input","text":42}', "invalid_message"),
])
def test_bad_client_messages_get_specific_codes(raw: str, code: str) -> None:
    with pytest.raises(Refusal) as raised:
        parse_client_message(raw)
    assert raised.value.code == code
    assert raised.value.message
