# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when pyproject.toml changes (the stamp is older than it).
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
PYTEST_ARGS   ?=
# One pytest-xdist worker per core (tests pin torch to one thread each; builds into one folder take turns);
# an idle worker steals queued tests from a busy one, so a few minute-long tests do not leave one core idle.
PYTEST_WORKERS ?= auto

.PHONY: demo test lint native clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## demo: teacher -> CE student -> KD student on the embedded digits data, then the results table.
## Finished stages in runs/digits are reused (delete that folder to train from scratch).
demo: $(RUNTIME_STAMP)
	$(BIN)/kdforge run recipes/digits.yaml --out runs/digits --resume

## test: the whole suite (CPU; GPU/TensorRT tests skip with their reason), one worker per core.
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## native: build kdforge-runner (C++, CMake) where deploy and bench --native look for it
## (~/.cache/kdforge/native/<env>/); prints that path and the backends compiled in.
native: $(RUNTIME_STAMP)
	$(BIN)/kdforge build-native

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
