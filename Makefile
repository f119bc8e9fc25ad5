# Lynx: `make run` starts everything on this machine; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-embedded lint lock clean bench db-roles

install: $(STAMP)

# Pinned and hashed: requirements.lock is what runs (the production image installs it), requirements-dev.lock
# the same versions plus the test and lint tools (this venv). `make lock` regenerates both from pyproject.toml.
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Lynx needs Python 3.11 (azureml-core supports up to 3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: install
	$(PY) -m lynx.launcher

# Tests keep their own var/ (database file, replicas, embedded Redis) apart from `make run`'s.
test: install
	LYNX_VAR_DIR=$(CURDIR)/var/test $(PY) -m pytest $(PYTEST_ARGS)

# The embedded defaults (SQLite, embedded Redis), quickly: what a laptop without services gets.
test-embedded: install
	env -u DATABASE_URL -u REDIS_URL LYNX_VAR_DIR=$(CURDIR)/var/test-embedded $(PY) -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

# Benchmark scripts (not tests): scoring throughput, the dashboard at scale, memory; ~10 minutes on 2 cores.
# Flags: make bench BENCH_ARGS="--repeats 3 --concurrency 1,16 --seconds 3 --only scoring". See docs/PERFORMANCE.md.
bench: install
	LYNX_VAR_DIR=$(CURDIR)/var/bench $(PY) -m bench $(BENCH_ARGS)

# ruff, the layering (import-linter: pyproject.toml's [tool.importlinter] contracts), that every import is
# declared and every declared package used (deptry), and types (mypy with django-stubs, [tool.mypy]).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	DJANGO_SETTINGS_MODULE=lynx.settings $(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/deptry .
	$(PY) -m mypy

# PostgreSQL only: the login role web, worker and beat should connect as, which can insert and read audit rows
# but neither change them nor drop the append-only trigger. Run as the tables' owner, after every migrate:
#   DATABASE_URL=postgres://owner@host/lynx LYNX_APP_PASSWORD=... make db-roles APP_ROLE=lynx_app
# then give Lynx's processes DATABASE_URL=postgres://lynx_app:...@host/lynx (migrate keeps the owner's URL).
APP_ROLE ?= lynx_app
db-roles: install
	$(PY) manage.py lynx_db_roles $(APP_ROLE) --password-env LYNX_APP_PASSWORD

# pip-tools runs from its own throwaway venv, so it is pinned by neither lock.
LOCK_VENV := var/lock-venv
COMPILE   := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2)
	$(COMPILE) -o requirements.lock pyproject.toml
	$(COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml

clean:
	rm -rf var/test var/test-embedded var/bench
