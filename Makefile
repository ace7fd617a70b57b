# The README's two commands: `make run` (the main job on the embedded default) and
# `make test` (lint, types and the whole test suite on a real broker and engine).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install tools run test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/privacy-pipeline run

# promtool and helm for the deploy tests (Debian package; Helm built from the Go proxy).
tools:
	bash scripts/install-tools.sh

lint: install
	$(BIN)/ruff check streams sinks tests bench
	$(BIN)/mypy

test: lint tools
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
