# Two commands for a newcomer: `make run` and `make test`. Each sets itself up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
FLOWER_PORT ?= 5555

.PHONY: run test lint bench profile chaos install stop services lock clean browser audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

install: $(VENV)/.installed

## run: the whole system in the foreground (web, worker, beat, Flower); Ctrl-C stops it
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py opie_metrics_reset
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	PORT=$(PORT) FLOWER_PORT=$(FLOWER_PORT) $(BIN)/python manage.py agentos_demo
	AGENTOS_WEBHOOK_ALLOW_PRIVATE=$${AGENTOS_WEBHOOK_ALLOW_PRIVATE:-1} FLOWER_BASIC_AUTH=$$(cat var/flower-auth) OPIE_WEB_PORT=$(PORT) OPIE_FLOWER_PORT=$(FLOWER_PORT) \
		$(BIN)/honcho --procfile Procfile start

## test: the static checks (make lint), then the whole suite against real PostgreSQL, Redis,
## Celery workers and Chromium
test: lint browser
	$(BIN)/python -m pytest

## lint: static checks, one line per tool, configured in pyproject.toml: ruff (style, imports,
## bugbear), mypy with django-stubs, lint-imports (which way imports may go)
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## browser: Debian's Chromium for the browser tests (never a downloaded browser)
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "The browser tests need Debian's Chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

## chaos: the chaos scenarios at full size; writes docs/reliability.md (make test runs them small)
chaos: install
	CHAOS_SCALE=full CHAOS_REPORT=1 $(BIN)/python -m pytest tests/test_chaos.py -v

## audit: known vulnerabilities in requirements.lock (pip-audit; needs PyPI; exceptions in .ci/audit-ignore.txt)
audit:
	.ci/audit

## bench: every benchmark scenario in one go (about 24 minutes; `make bench ARGS=--quick` for ~6, `ARGS=--only=waiters` for one scenario)
bench: install
	$(BIN)/python -m bench $(ARGS)

## profile: py-spy flame graphs of the web and the agents worker on the real path (var/bench/profile)
profile: install
	$(BIN)/python -m bench.profile $(ARGS)

## services / stop: start or stop the embedded PostgreSQL and Redis under ./var
services: install
	$(BIN)/python -c "from config import embedded; e = embedded.ensure_running(); print(e.database_url)"

stop:
	$(BIN)/python -c "from config import embedded; embedded.stop()"

lock: | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.in && $(BIN)/python -m pip freeze > requirements.lock

clean: stop
	rm -rf $(VENV) var
