# Quick start: `make demo` (set-up, then the demo) and `make test` (set-up, then the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system-deps browser-deps test demo weights clean app

# Headless OpenGL (EGL on Mesa) for the overlay renderer, and libGL for MediaPipe's OpenCV. Installed with apt
# when missing (Debian/Ubuntu; needs root or sudo); elsewhere install them yourself or run with --no-render.
SYSTEM_PACKAGES := libegl1 libgl1-mesa-dri libegl-mesa0 libgl1 libglib2.0-0

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Builds the Anny body cache (~790 MB, about a minute) once per machine; instant afterwards.
setup: system-deps $(STAMP)
	$(PY) -m diffmesh.cli setup

system-deps:
	@command -v dpkg >/dev/null 2>&1 || { echo "not Debian: make sure $(SYSTEM_PACKAGES) (or your system's EGL/Mesa) are installed"; exit 0; }; \
	missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing system packages:" $$missing; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

# Headless Chromium and its driver for the browser tests of `diffmesh app` (tests/test_app.py).
BROWSER_PACKAGES := chromium chromium-driver

browser-deps:
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES="$(BROWSER_PACKAGES)"

test: setup browser-deps
	$(PY) -m pytest -q -ra

app: setup
	$(VENV)/bin/diffmesh app

demo: setup
	$(VENV)/bin/diffmesh demo -o outputs/demo --force --side-view
	@echo "overlay: outputs/demo/overlay.mp4; Blender: outputs/demo/mesh.glb (File > Import > glTF 2.0), outputs/demo/motion_person*.bvh (one per person); numbers: outputs/demo/result.npz (docs/outputs.md)"

# Rebuild the shipped weights from scratch: fits, renders, the four methods on issue 14's recipe (MediaPipe's 3D as
# input and as the start pose, synthetic clips with MediaPipe's errors from the renders), the other seeds of
# DiffMesh and Baseline 2, evaluation and record (docs/results.md). About 6 hours on 2 cores, two runs side by side
# with `make -j2`. Shipped: each method's seed with the best validation MPJPE (Baseline 2: seed 1; the others had
# seed 0 shipped before their other seeds existed); Baseline 1 has 600 steps (a step costs it 5x the others').
TRAIN := $(VENV)/bin/diffmesh train --preset tiny --epochs 10 --batch-size 32 --threads 1
ANCHORED := --data renders --keypoint-inputs 2d+3d --anchor mediapipe-3d --synthetic-share 1.0 --noise-model mediapipe --shape-std 1.0
SHIPPED_RUNS := runs/tiny_diffmesh runs/tiny_baseline2 runs/tiny_baseline1 runs/tiny_perframe
SEED_RUNS := runs/tiny_diffmesh_s1 runs/tiny_diffmesh_s2 runs/tiny_baseline2_s0 runs/tiny_baseline2_s2

weights: setup
	$(VENV)/bin/diffmesh prepare
	$(VENV)/bin/diffmesh prepare --render
	$(MAKE) $(SHIPPED_RUNS) $(SEED_RUNS)
	$(PY) -m diffmesh.train.publish $(SHIPPED_RUNS) --seeds $(SEED_RUNS)

runs/tiny_diffmesh:; $(TRAIN) $(ANCHORED) --method diffmesh --seed 0 --steps-per-epoch 250 --out $@
runs/tiny_baseline2:; $(TRAIN) $(ANCHORED) --method baseline2 --seed 1 --steps-per-epoch 250 --out $@
runs/tiny_baseline1:; $(TRAIN) $(ANCHORED) --method baseline1 --seed 0 --steps-per-epoch 60 --out $@
runs/tiny_perframe:; $(TRAIN) $(ANCHORED) --method perframe --seed 0 --steps-per-epoch 250 --out $@
runs/tiny_diffmesh_s%:; $(TRAIN) $(ANCHORED) --method diffmesh --seed $* --steps-per-epoch 250 --out $@
runs/tiny_baseline2_s%:; $(TRAIN) $(ANCHORED) --method baseline2 --seed $* --steps-per-epoch 250 --out $@

clean:
	rm -rf $(VENV) outputs .pytest_cache
