"""scripts/download_models.py --piper-voice: a built piper-signature voice installed from a local file and from a
local HTTP server into the catalog folder, checksums enforced and recorded, --verify-only listing the voices."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from processors.tts.engines.piper import build_piper
from tests.integration.test_scripts_download_models import dm

pytest.importorskip("piper", reason="the optional `piper` extra is not installed")

from tests.support.piper_voices import build_voice  # after the skip: needs piper's phoneme map

pytestmark = pytest.mark.integration


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a user downloaded: two voices under the names the voice repository gives them."""
    folder = tmp_path_factory.mktemp("downloads")
    build_voice(folder, "fa_IR", "amir")
    build_voice(folder, "en_US", "lessac")
    (folder / "broken.onnx").write_bytes(b"this is not a graph")
    (folder / "broken.onnx.json").write_bytes((folder / "fa_IR-amir-medium.onnx.json").read_bytes())
    return folder


@pytest.fixture(scope="module")
def web(downloads: Path) -> Iterator[str]:
    """A local http.server serving the downloads folder (no internet here: a URL source the same way)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(downloads))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def run(monkeypatch: pytest.MonkeyPatch, catalog: Path, *argv: str) -> int:
    monkeypatch.setenv("PIPER_VOICES_DIR", str(catalog))
    return int(dm.main(list(argv)))


def test_a_voice_from_a_local_file_is_checked_installed_recorded_and_spoken_by_the_catalog(
        downloads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    source = downloads / "fa_IR-amir-medium.onnx"
    catalog = tmp_path / "voices"
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-amir-medium", "--from", str(source),
               "--verify-checksums", "--sha256", sha256(source),
               "--config-sha256", sha256(Path(f"{source}.json"))) == dm.EXIT_OK
    out = capsys.readouterr().out
    assert "speaks fa (fa_IR), dataset amir" in out and '"voice": "fa_IR-amir-medium"' in out
    assert sorted(path.name for path in catalog.iterdir()) == [
        "fa_IR-amir-medium.onnx", "fa_IR-amir-medium.onnx.json", "installed.json"], "no staging folder left"
    engine = build_piper(catalog, None, defaults={"fa": "", "en": ""}, threads=1, cache_dir=None, packaged=False)
    assert engine.synthesize("سلام", "fa").voice == "fa_IR-amir-medium"


def test_a_voice_from_a_url_installs_under_the_name_given(downloads: Path, web: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "voices"
    assert run(monkeypatch, catalog, "--piper-voice", "en_US-lessac-medium",
               "--from", f"{web}/en_US-lessac-medium.onnx") == dm.EXIT_OK
    assert (catalog / "en_US-lessac-medium.onnx").read_bytes() == (downloads / "en_US-lessac-medium.onnx").read_bytes()


def test_a_wrong_checksum_or_none_to_check_stops_before_the_catalog_is_touched(
        downloads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    source = downloads / "fa_IR-amir-medium.onnx"
    catalog = tmp_path / "voices"
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-amir-medium", "--from", str(source),
               "--verify-checksums", "--sha256", "0" * 64) == dm.EXIT_FAILED
    assert "does not match the expected" in capsys.readouterr().err
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-amir-medium", "--from", str(source),
               "--verify-checksums") == dm.EXIT_FAILED
    assert f"Its sha256 is {sha256(source)}" in capsys.readouterr().err
    assert [path.name for path in catalog.iterdir()] == []


def test_a_file_that_is_not_a_piper_voice_is_refused(downloads: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "voices"
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-broken-medium",
               "--from", str(downloads / "broken.onnx")) == dm.EXIT_FAILED
    assert "is not an ONNX model ONNX Runtime loads" in capsys.readouterr().err
    assert not (catalog / "fa_IR-broken-medium.onnx").exists()


def test_unreachable_voice_sources_are_named(tmp_path: Path, web: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "voices"
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-gyro-medium") == dm.EXIT_UNREACHABLE
    assert "rhasspy/piper-voices, fa/fa_IR/gyro/medium/" in capsys.readouterr().err
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-gyro-medium",
               "--from", f"{web}/fa_IR-gyro-medium.onnx") == dm.EXIT_UNREACHABLE
    assert f"could not reach {web}/fa_IR-gyro-medium.onnx" in capsys.readouterr().err
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"x")
    assert run(monkeypatch, catalog, "--piper-voice", "fa_IR-lonely-medium", "--from", str(lonely)) == \
        dm.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "no file at" in err and "lonely.onnx.json" in err, "the .json it looked for beside the .onnx"


def test_verify_only_lists_the_installed_voices_and_a_changed_file(downloads: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "voices"
    for name in ("fa_IR-amir-medium", "en_US-lessac-medium"):
        assert run(monkeypatch, catalog, "--piper-voice", name, "--from", str(downloads / f"{name}.onnx")) == 0
    rows = [row for row in dm.verify_installed(Settings(_env_file=None, piper_voices_dir=catalog))
            if row.file.endswith(".onnx") and "piper" in row.detail]
    assert [(row.file, row.ok) for row in rows] == [("en_US-lessac-medium.onnx", True),
                                                    ("fa_IR-amir-medium.onnx", True)]
    assert "fa (fa_IR), amir, medium, 22050 Hz" in rows[1].detail and "sha256 as installed" in rows[1].detail
    config = catalog / "fa_IR-amir-medium.onnx.json"
    config.write_text(config.read_text().replace('"amir"', '"amir2"'))
    changed = next(row for row in dm.verify_installed(Settings(_env_file=None, piper_voices_dir=catalog))
                   if row.file == "fa_IR-amir-medium.onnx")
    assert not changed.ok and "fa_IR-amir-medium.onnx.json changed since it was installed" in changed.detail


def test_verify_only_with_no_voices_says_so_and_fails_only_when_piper_needs_one(tmp_path: Path) -> None:
    rows = dm.verify_catalog(tmp_path / "none", dm.sha256_of, needed=False)
    assert [(row.ok, "none in" in row.detail) for row in rows] == [(True, True)]
    needed = dm.verify_catalog(tmp_path / "none", dm.sha256_of, needed=True)
    assert not needed[0].ok and "--piper-voice NAME --from" in needed[0].detail
