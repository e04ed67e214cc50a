# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck pytest bench bench-install bench-memory bench-conversations bench-logging lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python demo_database.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

# Benchmarks against a local PostgreSQL (not part of `make test`); results go to docs/benchmarks.md.
# `make bench` runs every script; `make bench-memory`, `make bench-conversations` or `make bench-logging` one of them. Flags go in
# BENCH_ARGS, e.g. `make bench-conversations BENCH_ARGS=--no-write`.
bench: bench-memory bench-conversations bench-logging

bench-install: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,bench]"

bench-memory: bench-install
	$(BIN)/python bench/memory.py $(BENCH_ARGS)

bench-conversations: bench-install
	$(BIN)/python bench/conversations.py $(BENCH_ARGS)

bench-logging: bench-install
	$(BIN)/python bench/logging_cost.py

# Re-pin every dependency after changing pyproject.toml.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache stratus.db stratus.db-wal stratus.db-shm
