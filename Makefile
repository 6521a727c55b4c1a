# Two commands for a newcomer: `make run` and `make test`. Each sets itself up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
FLOWER_PORT ?= 5555

.PHONY: run test bench install stop services lock clean

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
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	PORT=$(PORT) FLOWER_PORT=$(FLOWER_PORT) $(BIN)/python manage.py agentos_demo
	AGENTOS_WEBHOOK_ALLOW_PRIVATE=$${AGENTOS_WEBHOOK_ALLOW_PRIVATE:-1} FLOWER_BASIC_AUTH=$$(cat var/flower-auth) OPIE_WEB_PORT=$(PORT) OPIE_FLOWER_PORT=$(FLOWER_PORT) \
		$(BIN)/honcho --procfile Procfile start

## test: the whole suite against real PostgreSQL, Redis and Celery workers
test: install
	$(BIN)/python -m pytest

## bench: every benchmark scenario in one go (about 8 minutes; `make bench ARGS=--quick` for ~1)
bench: install
	$(BIN)/python -m bench $(ARGS)

## services / stop: start or stop the embedded PostgreSQL and Redis under ./var
services: install
	$(BIN)/python -c "from config import embedded; e = embedded.ensure_running(); print(e.database_url)"

stop:
	$(BIN)/python -c "from config import embedded; embedded.stop()"

lock: | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.in && $(BIN)/python -m pip freeze > requirements.lock

clean: stop
	rm -rf $(VENV) var
