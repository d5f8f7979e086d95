# Set-up and checks. Everything installs into .venv so a fresh Debian machine needs only make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint tiny bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull the CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

# The tiny example: build a tiny base model with three trained experts, then search.
tiny: install
	$(VENV)/bin/cycleqd models make-tiny examples/tiny
	$(VENV)/bin/cycleqd run examples/tiny.yaml --out runs/tiny --force

bench: install
	$(PY) benchmarks/child_creation.py

clean:
	rm -rf $(VENV) runs
