# The two commands a newcomer needs: `make demo` and `make test`. Both set up a fresh
# machine first (Debian packages, .venv, the Go-built peers cached by version).
SHELL := /bin/bash
VENV := .venv/bin
PY_DIRS := $(wildcard operator tests hack benchmarks)
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo down test lint unit integration e2e

setup:
	@bash hack/setup.sh

demo: setup
	@$(VENV)/muster dev up

down:
	@$(VENV)/muster dev down

lint: setup
	$(VENV)/ruff format --check $(PY_DIRS)
	$(VENV)/ruff check $(PY_DIRS)
	$(VENV)/mypy
	$(VENV)/lint-imports

# The whole suite, as CI runs it: lint, types, layer contracts, then every test.
test: lint
	$(VENV)/pytest -v -p no:cacheprovider

unit: setup
	$(VENV)/pytest -m unit

integration: setup
	$(VENV)/pytest -m integration

e2e: setup
	$(VENV)/pytest -m e2e
