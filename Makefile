# Run `make help` for the targets. Everything sets itself up in .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Model weights: a local .h5 path or an s3:// URI; empty means Keras' own `imagenet` download.
FRUITS_WEIGHTS ?=
export FRUITS_WEIGHTS

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@scripts/check_prereqs.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

.PHONY: setup
setup: $(STAMP) ## Create .venv and install the project with its pinned dependencies

.PHONY: run
run: $(STAMP) ## Run the job on the bundled sample images against a local S3 endpoint; results in output/
	@scripts/check_prereqs.sh $(PY)
	$(PY) scripts/run_local.py

.PHONY: test
test: $(STAMP) ## Run the whole test suite (unit and integration)
	@scripts/check_prereqs.sh $(PY)
	$(PY) -m pytest

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: format
format: $(STAMP) ## Format and sort imports with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: clean
clean: ## Remove .venv, output/ and caches
	rm -rf $(VENV) output .pytest_cache .mypy_cache .ruff_cache
