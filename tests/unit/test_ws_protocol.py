"""Client WebSocket messages are parsed strictly, each mistake with its own error code."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from gateway.audio_input import chunk_of_frame, chunk_of_message
from gateway.speak import Refusal
from gateway.ws import parse_client_message
from infra.settings import Settings
from schemas.websocket import AudioEnd, AudioInput, AvatarSelection, TextInput, pack_audio_frame


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


AUDIO_SETTINGS = Settings(_env_file=None, audio_max_message_s=1.0)


def test_audio_input_and_audio_end_parse() -> None:
    message = parse_client_message('{"type":"audio_input","sample_rate":24000,"data":"AAA=","language":"fa"}')
    assert isinstance(message, AudioInput) and message.sample_rate == 24000 and message.format == "pcm_s16le"
    assert isinstance(parse_client_message('{"type":"audio_end"}'), AudioEnd)


def test_audio_input_data_becomes_pcm16_samples() -> None:
    data = base64.b64encode(np.array([1, -2, 300], "<i2").tobytes()).decode()
    chunk = chunk_of_message(AUDIO_SETTINGS, AudioInput(type="audio_input", sample_rate=16000, data=data))
    assert list(chunk.pcm) == [1, -2, 300] and chunk.sample_rate == 16000


def test_a_binary_frame_carries_its_rate_in_the_pcm1_header() -> None:
    frame = pack_audio_frame(48000, np.array([5, -5], "<i2").tobytes())
    assert frame[:8] == b"PCM1" + (48000).to_bytes(4, "little")
    chunk = chunk_of_frame(AUDIO_SETTINGS, frame)
    assert chunk.sample_rate == 48000 and list(chunk.pcm) == [5, -5]


@pytest.mark.parametrize(("frame", "code"), [
    (b"\x00\x01\x02\x03" * 100, "missing_audio_header"),
    (b"PCM", "missing_audio_header"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unsupported_sample_format"),
    (pack_audio_frame(16000, b"\x00\x01\x02"), "odd_byte_count"),
    (pack_audio_frame(16000, b"\x00" * 2 * 16001), "audio_message_too_long"),
])
def test_bad_binary_frames_get_specific_codes(frame: bytes, code: str) -> None:
    with pytest.raises(Refusal) as raised:
        chunk_of_frame(AUDIO_SETTINGS, frame)
    assert raised.value.code == code and raised.value.message


@pytest.mark.parametrize(("data", "code"), [("not base64!", "invalid_audio_data"), ("AAAA", "odd_byte_count")])
def test_bad_audio_input_data_gets_specific_codes(data: str, code: str) -> None:
    with pytest.raises(Refusal) as raised:
        chunk_of_message(AUDIO_SETTINGS, AudioInput(type="audio_input", sample_rate=16000, data=data))
    assert raised.value.code == code
