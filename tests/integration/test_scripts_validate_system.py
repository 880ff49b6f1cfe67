"""scripts/validate_system.py against the real broker and PostgreSQL: every check passes on a working stack, and a
missing broker or unmigrated database is a failure row with its fix."""

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


def test_every_check_passes_on_a_working_stack(broker: EmbeddedBroker, database_url: str) -> None:
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=database_url, _env_file=None)
    results = {r.check: r for r in vs.run_checks(settings, vs.BASE_CHECKS + vs.MODEL_CHECKS + vs.FACE_CHECKS)}
    for name in ("broker", "database", "migrations", "espeak-ng voices", "lip-sync model (embedded)",
                 "viseme estimator", "face detection"):
        assert results[name].status == vs.OK, results[name]
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
