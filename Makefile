# Quick start: `make demo` (set-up, then the demo) and `make test` (set-up, then the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test demo clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Builds the Anny body cache (~790 MB, about a minute) once per machine; instant afterwards.
setup: $(STAMP)
	$(PY) -m diffmesh.cli setup

test: setup
	$(PY) -m pytest -q -ra

demo: setup
	$(VENV)/bin/diffmesh demo -o outputs/demo --force

clean:
	rm -rf $(VENV) outputs .pytest_cache
