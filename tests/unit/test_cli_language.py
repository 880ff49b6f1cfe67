"""`avatar-stream say` takes the protocol's --language as well as the older --lang."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from producers.cli import build_parser


@pytest.mark.parametrize("flag", ["--language", "--lang"])
def test_both_spellings_set_the_language(flag: str) -> None:
    args = build_parser(Settings(_env_file=None)).parse_args(["say", "سلام", flag, "fa"])
    assert args.lang == "fa"


def test_no_language_means_detected_and_a_wrong_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser(Settings(_env_file=None))
    assert parser.parse_args(["say", "hello"]).lang is None
    with pytest.raises(SystemExit):
        parser.parse_args(["say", "hello", "--language", "de"])
    with pytest.raises(SystemExit):
        parser.parse_args(["say", "--help"])
    assert "--language" in capsys.readouterr().out
