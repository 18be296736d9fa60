# The two commands: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lowdose-installed
DEMO_SERVE ?= 1
DEMO_FLAGS := $(if $(filter 0 no false,$(DEMO_SERVE)),--no-serve,)
# Three test processes on two cores: many tests wait on subprocesses and clusters, so a
# third overlaps the waits (clean-clone suite 7:50-9:28 with -n 3, 8:15-9:00 with -n 2
# on this shared machine: a small gain within its run-to-run noise). worksteal: xdist's
# default `load` hands each process a long run of tests at the start, and the end-to-end
# ones (collected first) then finish minutes after the others are idle; with stealing the
# same suite took 9:15 instead of 11:20 (same venv, back to back, 677 passed both).
PYTEST_FLAGS ?= -n 3 --dist worksteal

.PHONY: setup demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, with pip: 2.13.0 is a CPU build pip finds on local disk; a bare `torch`
# requirement would fetch a multi-GB CUDA build. The rest with uv, which keeps that torch
# (it satisfies torch>=2.4) and fills a fresh venv in about a minute where pip took
# 7-8 min here; pip installs the rest if uv cannot. --compile-bytecode as pip does: without
# .pyc files every spawned worker (python -B) compiled dask & co. again (suite 18 vs 9 min).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev,dashboard,cluster]' \
		|| $(BIN)/pip install --quiet -e '.[dev,dashboard,cluster]'
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/lowdose demo $(DEMO_FLAGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest $(PYTEST_FLAGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache lowdose-demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
