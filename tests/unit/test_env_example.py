"""env.example is generated from the settings object and committed current: every setting, its default, its meaning."""

from __future__ import annotations

import re

from infra.settings import BRIEF_NAMES, PROJECT_ROOT, Settings, env_example

ENV_EXAMPLE = PROJECT_ROOT / "env.example"


def test_the_committed_env_example_is_what_the_settings_generate() -> None:
    assert ENV_EXAMPLE.read_text(encoding="utf-8") == env_example(), (
        "env.example is out of date: run `.venv/bin/python -m infra.settings --env-example > env.example`")


def test_every_setting_is_listed_once_with_a_meaning_above_it() -> None:
    lines = env_example().splitlines()
    listed = [m.group(1) for m in (re.match(r"^#([A-Z0-9_]+)=", line) for line in lines) if m]
    assert listed == [name.upper() for name in Settings.model_fields]
    for index, line in enumerate(lines):
        if re.match(r"^#[A-Z0-9_]+=", line):
            assert lines[index - 1].startswith("# ") and len(lines[index - 1]) > 6, line


def test_every_field_has_a_one_line_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not missing, f"give these settings a description= (it becomes their line in env.example): {missing}"
    assert not [name for name, field in Settings.model_fields.items() if "\n" in (field.description or "")]


def test_defaults_are_shown_as_they_would_be_written() -> None:
    text = env_example()
    assert "#AVATAR_CACHE_MAX_BYTES=2GiB\n" in text and "#MAX_UPLOAD_BYTES=50MiB\n" in text
    assert "#DEV_MODE=true\n" in text and "#DATA_DIR=./.data\n" in text and "#GPU_MEMORY_LIMIT=0\n" in text
    assert str(PROJECT_ROOT) not in text  # the same file on every clone
    for name in BRIEF_NAMES:
        assert f"# {name}" in text
