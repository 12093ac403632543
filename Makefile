# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs the pinned runtime, starts Gunicorn on :5000 (demo data)
#   make test   creates .venv, installs runtime + test tools, runs the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: run test lint bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

test: $(VENV)/.dev
	$(PY) -m pytest

lint: $(VENV)/.dev

bench: $(VENV)/.dev

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
