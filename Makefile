# `make bench`: install and run the benchmark against the reference (CPU unless a GPU is present).
# `make test`:  install and run the test suite (unit tests, CUDA compile check, T4Rec integration).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install test bench

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install --no-build-isolation -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q
	bash tools/check_cuda.sh
	bash .ci/integration

bench: install
	$(PY) -m fastmask.bench
