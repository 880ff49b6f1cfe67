"""Performance checks are opt-in: they run under `pytest -m performance` and skip, saying so, in any other run."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SKIP = pytest.mark.skip(reason="performance checks are opt-in: run `pytest -m performance`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Marked at collection, so a skipped check never starts the stack. They load both cores for minutes;
    # `make test` (CI) keeps the functional load smoke test (tests/integration/test_load_smoke.py) instead.
    expression = str(config.getoption("markexpr") or "")
    if "performance" in expression and "not performance" not in expression:
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(SKIP)
