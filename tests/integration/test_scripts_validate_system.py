"""scripts/validate_system.py against the real broker and PostgreSQL: every check passes on a working stack, and a
missing broker or unmigrated database is a failure row with its fix; so is a piper voice that does not load or
speak (tiny voices of piper's real signature, real ONNX Runtime and piper), or piper asked for without a voice."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from psycopg import sql

from infra.broker import EmbeddedBroker, free_port
from infra.database import ensure_database, with_database
from infra.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_system", PROJECT_ROOT / "scripts" / "validate_system.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate_system"] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


vs = load_script()


@pytest.fixture
def unmigrated_database(database_url: str) -> Iterator[str]:
    """An empty database on the test server: no migration applied."""
    url = with_database(database_url, f"avatar_unmigrated_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    yield url
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.rsplit("/", 1)[1])))


@pytest.fixture
def piper_folder(tmp_path: Path) -> Path:
    """A Persian and an English voice, each a real piper-signature ONNX graph with piper's config."""
    pytest.importorskip("piper", reason="the optional `piper` extra is not installed")
    from tests.support.piper_voices import build_voice

    folder = tmp_path / "piper-voices"
    build_voice(folder, "fa_IR", "amir")
    build_voice(folder, "en_US", "lessac")
    return folder


def piper_settings(folder: Path, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(piper_voices_dir=folder, data_dir=tmp_path / "data", _env_file=None, **overrides)  # type: ignore[arg-type]


def test_every_check_passes_on_a_working_stack(broker: EmbeddedBroker, database_url: str, piper_folder: Path,
                                               tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url,
                        piper_voices_dir=piper_folder, _env_file=None)
    results = {r.check: r for r in vs.run_checks(settings, vs.BASE_CHECKS + vs.MODEL_CHECKS + vs.FACE_CHECKS)}
    for name in ("broker", "database", "migrations", "espeak-ng voices", "piper voices", "lip-sync model (embedded)",
                 "viseme estimator", "face detection"):
        assert results[name].status == vs.OK, results[name]
    assert "fa_IR-amir-medium (fa)" in results["piper voices"].detail
    assert "en_US-lessac-medium (en)" in results["piper voices"].detail
    assert results["GPU"].status in (vs.OK, vs.SKIP)  # no GPU is configured: not a failure
    assert "68 landmarks" in results["face detection"].detail
    table = vs.format_table(list(results.values()))
    assert "fix:" not in table


def test_failures_name_the_problem_and_the_fix(unmigrated_database: str) -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", database_url=unmigrated_database,
                        gpu_memory_limit="1GB", _env_file=None)
    results = {r.check: r for r in vs.run_checks(settings, vs.BASE_CHECKS)}
    assert results["broker"].status == vs.FAIL and "KAFKA_BOOTSTRAP_SERVERS" in results["broker"].fix
    assert results["database"].status == vs.OK
    assert results["migrations"].status == vs.FAIL and "0001_avatars.sql" in results["migrations"].detail
    assert "make run" in results["migrations"].fix
    if results["GPU"].status != vs.OK:  # GPU_MEMORY_LIMIT set: a missing GPU is a failure here
        assert results["GPU"].status == vs.FAIL and "onnxruntime-gpu" in results["GPU"].fix
    table = vs.format_table(list(results.values()))
    assert table.count("fix:") == sum(r.status == vs.FAIL for r in results.values())


def test_a_wav2lip_engine_without_its_model_fails_the_model_check(tmp_path: Path) -> None:
    settings = Settings(lipsync_engine="wav2lip", wav2lip_model_path=tmp_path / "none.onnx", _env_file=None)
    result = vs.check_lipsync_model(settings)
    assert result.status == vs.FAIL and "download_models.py" in result.fix


def test_each_piper_voice_loads_and_says_a_phrase_in_its_language(piper_folder: Path, tmp_path: Path) -> None:
    result = vs.piper_voices_result(piper_settings(piper_folder, tmp_path, tts_engine="piper"), packaged=False)
    assert result.status == vs.OK, result
    said = dict(part.split(": ") for part in result.detail.split(", "))
    assert said.keys() == {"fa_IR-amir-medium (fa)", "en_US-lessac-medium (en)"}
    assert all(float(seconds.removesuffix(" s")) > 0 for seconds in said.values())


def test_a_piper_voice_that_lacks_its_json_speaks_another_language_or_is_no_piper_graph_fails_with_a_fix(
        piper_folder: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from tests.support.piper_voices import build_voice

    build_voice(piper_folder, "fa_IR", "orphan").with_name("fa_IR-orphan-medium.onnx.json").unlink()
    build_voice(piper_folder, "de_DE", "thorsten")
    not_piper = build_voice(piper_folder, "fa_IR", "odd")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["output"])], "not_piper",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(graph), str(not_piper))
    result = vs.piper_voices_result(piper_settings(piper_folder, tmp_path), packaged=False)
    assert result.status == vs.FAIL
    assert "fa_IR-orphan-medium.onnx has no fa_IR-orphan-medium.onnx.json beside it" in result.detail
    assert "de_DE-thorsten-medium.onnx: speaks 'de_DE'" in result.detail
    assert "fa_IR-odd-medium.onnx does not run" in result.detail
    assert "amir" not in result.detail and "lessac" not in result.detail, "the good voices are not blamed"
    assert "download_models.py --piper-voice" in result.fix and "piper (VITS) export" in result.fix
    assert "fix: " in vs.format_table([result])


def test_piper_asked_for_with_no_voice_fails_and_no_catalog_at_all_is_skipped_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "no-voices"
    asked = vs.piper_voices_result(Settings(tts_engine="piper", data_dir=tmp_path, _env_file=None), packaged=False)
    assert asked.status == vs.FAIL and "TTS_ENGINE" in asked.detail and "no piper voice" in asked.detail
    assert "download_models.py --piper-voice" in asked.fix and "TTS_ENGINE=espeak" in asked.fix
    unused = vs.piper_voices_result(Settings(data_dir=tmp_path, _env_file=None), packaged=False)
    assert unused.status == vs.SKIP and "no piper voice catalog" in unused.detail
    named = vs.piper_voices_result(piper_settings(empty, tmp_path), packaged=False)
    assert named.status == vs.FAIL and "PIPER_VOICES_DIR" in named.detail


def test_a_default_piper_voice_missing_from_the_catalog_fails_naming_the_setting(piper_folder: Path,
                                                                                tmp_path: Path) -> None:
    result = vs.piper_voices_result(piper_settings(piper_folder, tmp_path, piper_voice_fa="en_US-lessac-medium"),
                                    packaged=False)
    assert result.status == vs.FAIL
    assert "PIPER_VOICE_FA: no fa voice 'en_US-lessac-medium'" in result.detail
    assert "fa_IR-amir-medium" in result.fix
