# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the hub on the embedded SQLite store, with sample readings flowing through the API
run: $(STAMP)
	$(BIN)/hub serve --demo

## test: lint, type-check, layering contract, then every test on SQLite and PostgreSQL
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy hub connectors
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy hub connectors

## bench: throughput figures (not tests); last line of each is JSON
bench: $(STAMP)
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
