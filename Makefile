# `make bench`: install, then benchmark every backend against the reference and the installed
#               transformers4rec (CPU unless a GPU is present).
# `make test`:  install, then lint, the test suite (with the transformers4rec integration tests) and
#               the CUDA compile check.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Versions with which transformers4rec 23.12 installs and runs on CPU with torch 2.13.
CONSTRAINTS := ci/t4rec-constraints.txt

.PHONY: install test bench

$(VENV)/.installed: setup.py pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c $(CONSTRAINTS) transformers4rec==23.12.0
	$(PY) -m pip install -c $(CONSTRAINTS) --no-build-isolation -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q
	bash tools/check_cuda.sh

bench: install
	$(PY) -m fastmask.bench
