# Tokenpass developer commands. `make run` and `make test` are the quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint typecheck migrations-check check install chromium worker beat bench bench-token messages clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Serve on http://127.0.0.1:8000 with demo data on SQLite and eager Celery.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py runserver 127.0.0.1:8000

## The whole suite on PostgreSQL (DATABASE_URL) and a real broker (CELERY_BROKER_URL).
test: install chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium; Playwright never downloads a browser of its own.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "Chromium is missing: run 'sudo apt-get install -y chromium'" >&2; exit 1; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy .

migrations-check: install
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) manage.py makemigrations --check --dry-run

check: lint typecheck migrations-check

worker: install
	$(VENV)/bin/celery -A config worker -l info

beat: install
	$(VENV)/bin/celery -A config beat -l info

messages: install
	cd $(CURDIR) && $(PY) manage.py makemessages -l zh_Hans --no-obsolete --ignore '.venv/*' --ignore 'bench/*' --ignore 'tests/*' --ignore 'staticfiles/*'
	$(PY) manage.py compilemessages -l zh_Hans --ignore '.venv/*'

bench: install
	$(PY) bench/run.py

## Token endpoint only: Tokenpass beside oidc-provider (needs node and npm).
bench-token: install
	$(PY) bench/token/run.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
