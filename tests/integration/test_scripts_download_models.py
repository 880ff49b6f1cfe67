"""scripts/download_models.py on a real (random-weight, slim) Wav2Lip checkpoint: fetch, checksum, convert, variants,
verify; and what it says when it cannot reach a source."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from infra.settings import PROJECT_ROOT, Settings
from scripts.wav2lip.graph import random_state_dict, wav2lip_architecture
from tests.unit.test_wav2lip_engine import SLIM, wav2lip_checkpoint, write_torch_checkpoint


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("download_models", PROJECT_ROOT / "scripts" / "download_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["download_models"] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


dm = load_script()
SLIM_ARCH = wav2lip_architecture(SLIM)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "wav2lip_gan.pth"
    write_torch_checkpoint(path, wav2lip_checkpoint(random_state_dict(SLIM_ARCH, seed=5)), legacy=False)
    return path


def test_a_local_checkpoint_is_checked_converted_with_its_variants_and_then_verified(
        checkpoint: Path, tmp_path: Path) -> None:
    entry = dm.load_manifest()["wav2lip_gan"]
    output = tmp_path / "models" / "wav2lip.onnx"
    said: list[str] = []
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    written = dm.install(entry, str(checkpoint), output, verify=True, sha256=digest, gpu_optimize=True,
                         arch=SLIM_ARCH, say=said.append)
    assert [p.name for p in written] == ["wav2lip.onnx", "wav2lip.fp16.onnx", "wav2lip.int8.onnx"]
    assert any(line.startswith("sha256 ok") for line in said)
    rows = dm.verify_installed(Settings(_env_file=None, wav2lip_model_path=output, lipsync_engine="wav2lip"))
    assert [row.file for row in rows][:3] == [p.name for p in written]
    assert all(row.ok for row in rows), rows
    assert "sha256 as installed" in rows[0].detail and "one frame in" in rows[0].detail

    written[1].write_bytes(written[1].read_bytes()[:-1] + b"\0")  # a changed (here: corrupted) file
    bad = dm.verify_installed(Settings(_env_file=None, wav2lip_model_path=output))[1]
    assert not bad.ok


def test_a_file_url_is_fetched_like_a_path(checkpoint: Path, tmp_path: Path) -> None:
    fetched = dm.fetch(checkpoint.as_uri(), tmp_path / "copy.pth")
    assert fetched.read_bytes() == checkpoint.read_bytes()


def test_checksums_are_enforced_and_a_missing_one_shows_the_files(checkpoint: Path, tmp_path: Path) -> None:
    entry = dm.load_manifest()["wav2lip_gan"]
    with pytest.raises(dm.CheckFailed, match="does not match"):
        dm.install(entry, str(checkpoint), tmp_path / "a.onnx", verify=True, sha256="0" * 64, gpu_optimize=False,
                   arch=SLIM_ARCH, say=lambda _line: None)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    with pytest.raises(dm.CheckFailed, match=f"no published sha256.*{digest}"):
        dm.install(entry, str(checkpoint), tmp_path / "b.onnx", verify=True, sha256=None, gpu_optimize=False,
                   arch=SLIM_ARCH, say=lambda _line: None)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_unreachable_sources_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAV2LIP_MODEL_PATH", str(tmp_path / "w.onnx"))
    assert dm.main([]) == dm.EXIT_UNREACHABLE
    assert "the manifest has no URL" in capsys.readouterr().err
    assert dm.main(["--from", str(tmp_path / "missing.pth")]) == dm.EXIT_UNREACHABLE
    assert "no file at" in capsys.readouterr().err
    assert dm.main(["--from", "http://127.0.0.1:9/wav2lip_gan.pth"]) == dm.EXIT_UNREACHABLE
    assert "could not reach http://127.0.0.1:9/" in capsys.readouterr().err


def test_verify_only_reports_a_missing_model_the_engine_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WAV2LIP_MODEL_PATH", str(tmp_path / "w.onnx"))
    monkeypatch.setenv("LIPSYNC_ENGINE", "wav2lip")
    assert dm.main(["--verify-only"]) == dm.EXIT_FAILED
    out = capsys.readouterr().out
    assert "LIPSYNC_ENGINE=wav2lip needs it" in out and "shape_predictor_68_face_landmarks.dat" in out
