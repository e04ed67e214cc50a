# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
PIP := python -m pip --quiet --disable-pip-version-check

.PHONY: install browser demo test lint typecheck pytest wheel-check bench bench-install bench-memory bench-conversations bench-logging bench-activity bench-crypto bench-encryption bench-consent bench-audit bench-http bench-metrics lock clean

# Locked installs in two steps: every dependency from a lock with hashes (--require-hashes: pip refuses any file
# whose hash is not in it), then the project itself, editable and without dependencies. One step cannot do both:
# pip checks hashes for every requirement once any has one (constraints too), and an editable install has no file
# to hash. `pip check` then fails a lock that no longer satisfies pyproject.toml. The build backend comes from the
# lock too (--no-build-isolation), so nothing unpinned is fetched.
define locked-install
	$(PYTHON) -m venv $(1)
	$(1)/bin/$(PIP) install --require-hashes -r $(2)
	$(1)/bin/$(PIP) install --no-deps --no-build-isolation -e .
	$(1)/bin/python -m pip check --disable-pip-version-check
endef

$(STAMP): pyproject.toml requirements/dev.txt
	$(call locked-install,$(VENV),requirements/dev.txt)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python demo_database.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install browser
	$(BIN)/pytest

# The system's Chromium for the dashboard's browser tests (installed with apt-get when missing).
browser:
	bash scripts/ensure_chromium.sh

test: lint typecheck pytest

# The wheel as users get it: built from an sdist in python -m build's isolated environment, installed into a fresh
# virtual environment with the runtime lock only (no dev, bench or openai extra), then `stratus-db demo` in an empty
# directory. Run by .ci/run after `make test`; about a minute.
wheel-check: install
	bash scripts/wheel_check.sh $(BIN)/python

# Benchmarks against a local PostgreSQL (not part of `make test`); results go to docs/benchmarks.md.
# `make bench` runs every script; `make bench-memory`, `make bench-conversations`, `make bench-logging`, `make bench-activity`, `make bench-crypto` or `make bench-consent` one of them. Flags go in
# BENCH_ARGS, e.g. `make bench-conversations BENCH_ARGS=--no-write`. They run in their own .venv-bench, from
# requirements/bench.txt: the peers (langchain-core, langsmith) cap uuid-utils below 1, which .venv's tests do not.
bench: bench-memory bench-conversations bench-logging bench-activity bench-crypto bench-encryption bench-consent bench-audit bench-http bench-metrics

$(BENCH_STAMP): pyproject.toml requirements/bench.txt
	$(call locked-install,$(BENCH_VENV),requirements/bench.txt)
	touch $(BENCH_STAMP)

bench-install: $(BENCH_STAMP)

bench-memory: bench-install
	$(BENCH_BIN)/python bench/memory.py $(BENCH_ARGS)

bench-conversations: bench-install
	$(BENCH_BIN)/python bench/conversations.py $(BENCH_ARGS)

bench-logging: bench-install
	$(BENCH_BIN)/python bench/logging_cost.py

bench-activity: bench-install
	$(BENCH_BIN)/python bench/activity_cost.py $(BENCH_ARGS)

bench-crypto: bench-install
	$(BENCH_BIN)/python bench/crypto.py $(BENCH_ARGS)

bench-consent: bench-install
	$(BENCH_BIN)/python bench/consent_cost.py $(BENCH_ARGS)

bench-encryption: bench-install
	$(BENCH_BIN)/python bench/encryption_cost.py $(BENCH_ARGS)

bench-audit: bench-install
	$(BENCH_BIN)/python bench/audit_cost.py $(BENCH_ARGS)

bench-http: bench-install
	$(BENCH_BIN)/python bench/http_service.py $(BENCH_ARGS)

bench-metrics: bench-install
	$(BENCH_BIN)/python bench/metrics.py $(BENCH_ARGS)

# Re-pin after changing pyproject.toml or requirements/*.in: uv compiles the locks with the hashes of every file of
# each pinned release. Pins already in a lock are kept where they still fit; `make lock UPGRADE=--upgrade` moves every
# dependency to its newest allowed release. runtime.txt is dev.txt's subset (-c): images run what the tests ran.
UV_VERSION := 0.13.9
UPGRADE ?=
COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 $(UPGRADE)

# Not after `install`: a dependency just added to pyproject.toml is not in the locks yet, and install's pip check fails.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) install uv==$(UV_VERSION)
	$(COMPILE) pyproject.toml requirements/dev.in --extra dev --extra openai -o requirements/dev.txt
	$(COMPILE) pyproject.toml requirements/bench.in --extra dev --extra bench --extra openai -o requirements/bench.txt
	$(COMPILE) pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt
	$(COMPILE) requirements/build.in -c requirements/dev.txt -o requirements/build.txt

clean:
	rm -rf $(VENV) $(BENCH_VENV) .mypy_cache .ruff_cache .pytest_cache stratus.db stratus.db-wal stratus.db-shm
