# The two commands a newcomer needs: `make demo` and `make test`. Both set up a fresh
# machine first (Debian packages, .venv, the Go-built peers cached by version).
SHELL := /bin/bash
VENV := .venv/bin
PY_DIRS := $(wildcard operator tests hack benchmarks fuzz)
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo down test lint unit integration e2e

setup:
	@bash hack/setup.sh

demo: setup
	@$(VENV)/muster dev up --demo

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

# The performance suite (docs/performance.md): one table, goals met or missed, JSON results.
.PHONY: bench bench-smoke
bench: setup
	$(VENV)/python benchmarks/run.py

bench-smoke: setup
	$(VENV)/python benchmarks/run.py --smoke

# Regenerate everything derived from the code: CRDs, the default policies, the chart's webhook
# sources, the CRD reference, the chart README's values table and the plain manifests (tests
# fail when any of them drifts).
.PHONY: generate
generate: setup
	$(VENV)/python hack/generate-crds.py
	$(VENV)/python hack/generate-default-policies.py
	$(VENV)/python hack/generate-webhooks.py
	$(VENV)/python hack/generate-reference.py
	$(VENV)/python hack/chart-values-table.py
	bash hack/render-manifests.sh
