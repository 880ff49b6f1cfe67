"""The licence files exist, agree with pyproject, name the restrictive third-party terms, and the README links them."""

from __future__ import annotations

import tomllib

from infra.settings import PROJECT_ROOT


def test_the_license_file_is_the_mit_licence_pyproject_declares() -> None:
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    assert declared == {"text": "MIT"}
    text = (PROJECT_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_the_third_party_list_names_the_terms_that_restrict_use() -> None:
    text = (PROJECT_ROOT / "THIRD_PARTY_LICENSES.md").read_text(encoding="utf-8")
    for needle in ("espeak-ng", "piper-tts", "GPL-3.0", "iBUG 300-W", "research use only", "Wav2Lip",
                   "Vazirmatn", "Open Font License", "astronaut", "public domain", "Swagger UI", "ReDoc"):
        assert needle in text, needle
    assert (PROJECT_ROOT / "gateway/static/player-fonts/OFL.txt").is_file()


def test_the_readme_links_both() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(LICENSE)" in readme and "(THIRD_PARTY_LICENSES.md)" in readme
