# Two commands: `make sweep` (set up, run the default sweep on an embedded local Ray)
# and `make test` (set up, lint with ruff, run the tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: setup sweep test bench clean

setup: $(VENV)/.installed

# torch first and pinned: on these machines 2.13.0 is a local CPU wheel, and a bare
# `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

sweep: setup
	$(PY) -m orchestrator.sweep $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache
