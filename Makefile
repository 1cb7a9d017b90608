# Every target here is what CI runs (.ci/run calls `make ci`), so none can go stale.
# Each target creates its own virtualenv on first use; nothing needs to be set up.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= test,lint,psycopg3,triggers
PINS ?=
BIN := $(VENV)/bin
PG15 := /usr/lib/postgresql/15/bin

.PHONY: test lint example bench ci test-psycopg2-pg15 clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]" $(PINS)
	touch $@

## The test suite on a throwaway PostgreSQL (or DATABASE_URL), with psycopg 3.
test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## ruff (format and lint) and mypy, all blocking.
lint: $(VENV)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy django_pgpubsub tests scripts bench
	cd example_project && DATABASE_URL=postgresql://localhost/example ../$(BIN)/mypy .

## The example project: PostgreSQL, migrations, listen_events and runserver.
example: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r example_project/requirements.txt
	$(BIN)/python scripts/pgtemp.py $(BIN)/python example_project/run.py

## Benchmarks against a raw driver loop; prints a table, writes bench/results.json.
bench: $(VENV)/.installed
	$(BIN)/python scripts/pgtemp.py $(BIN)/python -m bench $(BENCH_ARGS)

## The suite again with psycopg2 alone and the oldest supported Django, on
## Debian's PostgreSQL 15.
test-psycopg2-pg15:
	$(MAKE) test VENV=.venv-psycopg2 EXTRAS=test,triggers PINS=Django~=4.2.0 PG_BINDIR=$(PG15)

ci: lint test test-psycopg2-pg15

clean:
	rm -rf .venv .venv-psycopg2 *.egg-info .mypy_cache .ruff_cache .pytest_cache
