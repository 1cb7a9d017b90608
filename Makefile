# Every target here is what CI runs (.ci/run calls `make ci`), so none can go stale.
# Each target creates its own virtualenv on first use; nothing needs to be set up.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= test,lint,docs,psycopg3,metrics,health,triggers
PINS ?=
comma := ,
# What the suite needs, without the lint tools: for the other Django versions.
TEST_EXTRAS = $(subst $(comma)docs,,$(subst $(comma)lint,,$(EXTRAS)))
BIN := $(VENV)/bin
PG15 := /usr/lib/postgresql/15/bin
# Coverage of the package by the tests run in this process (not by the
# processes they start): `make test` starts the figures afresh, `make
# test-slow` adds its own and prints the total.
COVERAGE := --cov=django_pgpubsub
# The test tiers, declared in setup.cfg: the quick one is everything unmarked.
QUICK := not slow and not bench and not browser
SLOW := slow or bench or browser
# What the psycopg2 run leaves out, for time: nothing in them depends on the
# driver (the benchmark and browser tiers, the example project, the copy of
# pgserver, the packaging, the durable run at scale).
PSYCOPG2_SKIP := -m "not bench and not browser and not scale" \
	--ignore=tests/project/test_example_project.py --ignore=tests/project/test_fresh_machines.py \
	--ignore=tests/project/test_packaging.py

.PHONY: test test-slow lint docs example bench ci system-deps test-psycopg2-pg15 test-private-clone \
	test-django-versions test-pgbouncer clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]" $(PINS)
	touch $@

## The quick tier (under a minute) on a throwaway PostgreSQL (or DATABASE_URL),
## with psycopg 3.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "$(QUICK)" $(COVERAGE) --cov-report= $(PYTEST_ARGS)

## The other tiers: processes, server restarts, many events, the example
## project, the benchmark smoke test, the browser.
test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m "$(SLOW)" $(COVERAGE) --cov-append --cov-report=term:skip-covered \
		$(PYTEST_ARGS)

## ruff (format and lint) and mypy, all blocking.
lint: $(VENV)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy django_pgpubsub tests scripts bench
	cd example_project && DATABASE_URL=postgresql://localhost/example ../$(BIN)/mypy .

## The docs site (Sphinx, the docs extra) into docs/_build/html, warnings as errors.
docs: $(VENV)/.installed
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

## The example project: PostgreSQL, migrations, listen_events and uvicorn.
example: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r example_project/requirements.txt
	$(BIN)/python scripts/pgtemp.py $(BIN)/python example_project/run.py

## Benchmarks against a raw driver loop; prints a table, writes bench/results.json.
bench: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS),bench]"
	$(BIN)/python scripts/pgtemp.py $(BIN)/python -m bench $(BENCH_ARGS)

## The suite again with psycopg2 alone and the oldest supported Django, on
## Debian's PostgreSQL 15: the quick tier and the slow tests that involve the
## driver (PSYCOPG2_SKIP above).
test-psycopg2-pg15:
	$(MAKE) .venv-psycopg2/.installed VENV=.venv-psycopg2 EXTRAS=test,metrics,health,triggers PINS=Django~=4.2.0
	PG_BINDIR=$(PG15) .venv-psycopg2/bin/python -m pytest $(PSYCOPG2_SKIP) $(PYTEST_ARGS)

## As root: a fresh clone in a folder only root can enter (a home under /root,
## a CI workspace), where PostgreSQL, run as nobody, cannot reach the
## virtualenv. Creates its virtualenv, runs the quick tier of a few modules
## there and reaches the server that scripts/pgtemp.py starts for make example
## and make bench; the folder is removed whatever happens.
test-private-clone:
	@if [ "$$(id -u)" != 0 ]; then echo "$@: only meaningful as root; skipped"; exit 0; fi; \
	set -e; dir=$$(mktemp -d /root/pgpubsub-ci.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	chmod 700 "$$dir"; git clone --quiet . "$$dir/clone"; \
	$(MAKE) -C "$$dir/clone" test \
		PYTEST_ARGS="-q tests/conf/test_conf.py tests/project/test_readme.py tests/testing/test_testing_helpers.py"; \
	cd "$$dir/clone" && .venv/bin/python scripts/pgtemp.py .venv/bin/python -c \
		"import os, psycopg; psycopg.connect(os.environ['DATABASE_URL']).close(); print('pgtemp.py (make example, make bench): server reached')"

## notify()'s fallback and fast path on the Django versions the other runs do
## not cover (5.2 in `test`, 4.2 in `test-psycopg2-pg15`); then, on Django 4.2
## with psycopg 3 (the psycopg2 run cannot stream), the event streams, the hub
## and cancel_on_disconnect(), slow tests included. One virtualenv, Django
## switched in place (quicker than a virtualenv each).
DJANGO42_STREAMS := tests/hub/test_asgi.py tests/publishing/test_async.py tests/hub/test_hub.py tests/hub/test_sse.py
test-django-versions:
	$(MAKE) .venv-django-versions/.installed VENV=.venv-django-versions EXTRAS=$(TEST_EXTRAS) \
		PINS=Django~=5.0.0
	for version in 5.0.0 5.1.0; do \
		.venv-django-versions/bin/pip install --quiet --disable-pip-version-check Django~=$$version && \
		.venv-django-versions/bin/python -m django --version && \
		.venv-django-versions/bin/python -m pytest -q -m "$(QUICK)" tests/publishing/test_notify.py || exit 1; \
	done
	.venv-django-versions/bin/pip install --quiet --disable-pip-version-check Django~=4.2.0
	.venv-django-versions/bin/python -m django --version
	.venv-django-versions/bin/python -m pytest -q -m "not bench and not browser" $(DJANGO42_STREAMS)

## What the tiers need from Debian: PostgreSQL 15 for the psycopg2 run,
## Chromium for the browser tier (Playwright cannot download its own browsers
## here), and PgBouncer for the pooler run. Installed when missing, as root;
## otherwise it says what to install.
system-deps:
	@missing=""; \
	[ -x $(PG15)/postgres ] || missing="$$missing postgresql-15"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	[ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make ci needs:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

## The durable, listener and outbox tests as production runs them: DATABASE
## through PgBouncer in transaction pooling mode, server connections recycled
## every second, LISTENER_DATABASE direct (tests/settings_pgbouncer.py; the
## listen_events they start get the same shape). The quick tier and the slow
## tests but the runs at scale. The listeners under separate roles, directly
## and behind PgBouncer, are in the slow tier (tests/durable/test_durable_roles.py).
PGBOUNCER_TESTS := tests/durable/test_durable.py tests/durable/test_durable_claims.py tests/durable/test_durable_keys.py \
	tests/durable/test_durable_leases.py tests/durable/test_durable_processes.py tests/durable/test_durable_production.py \
	tests/durable/test_durable_wakeup.py tests/durable/test_wakeups.py tests/durable/test_ordering.py \
	tests/durable/test_ordering_processes.py tests/listener/test_listener.py tests/listener/test_listener_edges.py \
	tests/listener/test_listen_events.py tests/listener/test_liveness.py tests/listener/test_schedule.py
test-pgbouncer: $(VENV)/.installed
	$(BIN)/python -m pytest --ds=tests.settings_pgbouncer --reuse-db \
		-m "not scale and not bench and not browser" $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

## Every tier, in order, each timed (the figures CI's budget is kept by).
CI_TIERS := system-deps lint docs test test-slow test-pgbouncer test-psycopg2-pg15 \
	test-private-clone test-django-versions
ci:
	@for tier in $(CI_TIERS); do \
		started=$$(date +%s); \
		$(MAKE) --no-print-directory $$tier || exit 1; \
		echo "make ci: $$tier took $$(( $$(date +%s) - started )) s"; \
	done

clean:
	rm -rf .venv .venv-psycopg2 .venv-django-versions .coverage \
		*.egg-info .mypy_cache docs/_build \
		.ruff_cache .pytest_cache
