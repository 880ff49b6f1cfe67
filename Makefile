# The two commands: `make run` and `make test`. Both install what they need first.
.PHONY: run test test-unit lint typecheck schemas benchmark install install-dev clean

VENV := .venv
PY := $(VENV)/bin/python

install:
	@bash infra/bootstrap.sh run

install-dev:
	@bash infra/bootstrap.sh test

run: install
	@$(PY) -m infra.launcher

test: install-dev
	@$(PY) -m pytest -q

# The pure cores and the import rule alone: no broker, no database, no browser.
test-unit: install-dev
	@$(PY) -m pytest -q tests/unit

lint: install-dev
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy .

schemas: install
	@$(PY) -m schemas.export

benchmark: install-dev
	@$(PY) scripts/performance_benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .data
