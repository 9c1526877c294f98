# make demo / make test: each creates .venv and installs everything on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# Lambda runs python3.13 and `sam build` needs that interpreter on PATH, so prefer it for the venv.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13) python3)
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export SAM_CLI_TELEMETRY := 0
PYTEST_ARGS ?=

.PHONY: install lint typecheck validate test unit bench chaos demo build clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

validate: $(STAMP)
	@if [ -f template.yaml ]; then $(BIN)/sam validate --lint --template template.yaml; fi

test: lint typecheck validate
	$(BIN)/python -m pytest -q -m "not bench" $(PYTEST_ARGS)

# sam build needs the runtime's python3.13 on PATH: the venv's interpreter is one when the machine has 3.13.
build: $(STAMP)
	$(BIN)/sam build --template template.yaml --build-dir .aws-sam/build

# Every benchmark; the figures are printed and written as one table to out/bench.md.
bench: $(STAMP)
	$(BIN)/python -m pytest -q -s -m bench tests/bench $(PYTEST_ARGS)

# The chaos suite at full size (2,000 questions; make test runs it at 300, see tests/chaos).
chaos: $(STAMP)
	CITEQ_CHAOS_SIZE=2000 $(BIN)/python -m pytest -q -s tests/chaos $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m infra.demo

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
