# Quick start: `make demo` (set-up, then the demo) and `make test` (set-up, then the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test demo weights clean

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

# Rebuild the shipped weights from scratch: fits, four trainings, evaluation, record (docs/results.md).
TRAIN := $(VENV)/bin/diffmesh train --preset tiny --epochs 10 --batch-size 32 --seed 0 --threads 1
weights: setup
	$(VENV)/bin/diffmesh prepare
	$(TRAIN) --method diffmesh --steps-per-epoch 250 --out runs/tiny_diffmesh
	$(TRAIN) --method baseline2 --steps-per-epoch 250 --out runs/tiny_baseline2
	$(TRAIN) --method perframe --steps-per-epoch 250 --out runs/tiny_perframe
	$(TRAIN) --method baseline1 --steps-per-epoch 60 --out runs/tiny_baseline1
	$(PY) -m diffmesh.weights.publish runs/tiny_diffmesh runs/tiny_baseline1 runs/tiny_baseline2 runs/tiny_perframe

clean:
	rm -rf $(VENV) outputs .pytest_cache
