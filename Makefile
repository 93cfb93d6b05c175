# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when pyproject.toml changes (the stamp is older than it).
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
# Static tools (pyright, basedpyright, Pylance) cannot follow the editable install's import hook, which maps
# kdforge.compress -> compress/ (package-dir). IMPORT_TREE/kdforge links kdforge/__init__.py and the three
# folders under their installed names, and [tool.pyright] extraPaths points there, so they resolve
# `kdforge.*` as Python does. Folder links: new files show at once, nothing to re-link. (setuptools' strict
# editable mode would do this for Python too, but a checkout's root on sys.path, as under pytest or
# `python -m`, then shadows it with the bare kdforge/ folder and kdforge.compress is not found.)
IMPORT_TREE   := build/import-tree
PYTEST_ARGS   ?=
# One pytest-xdist worker per core (tests pin torch to one thread each; builds into one folder take turns);
# an idle worker steals queued tests from a busy one, so a few minute-long tests do not leave one core idle.
PYTEST_WORKERS ?= auto

.PHONY: demo test lint native clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(IMPORT_TREE)/kdforge/__init__.py:
	rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)/kdforge
	ln -s ../../../kdforge/__init__.py $(IMPORT_TREE)/kdforge/__init__.py
	for folder in compress kernels export; do ln -s ../../../$$folder $(IMPORT_TREE)/kdforge/$$folder; done

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python $(IMPORT_TREE)/kdforge/__init__.py
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## demo: teacher -> CE student -> KD student on the embedded digits data, then the results table.
## Finished stages in runs/digits are reused (delete that folder to train from scratch).
demo: $(RUNTIME_STAMP)
	$(BIN)/kdforge run recipes/digits.yaml --out runs/digits --resume

## test: `make lint` first (a failure stops the run), then the whole suite (CPU; GPU/TensorRT tests skip with
## their reason), one worker per core.
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## native: build kdforge-runner (C++, CMake) where deploy and bench --native look for it
## (~/.cache/kdforge/native/<env>/); prints that path and the backends compiled in.
native: $(RUNTIME_STAMP)
	$(BIN)/kdforge build-native

## lint: ruff, then basedpyright (pyproject.toml [tool.pyright]; an unresolved import is an error).
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/basedpyright --pythonpath $(BIN)/python

clean-venv:
	rm -rf $(VENV)
