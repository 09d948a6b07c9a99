# Developer and CI entry points. `make test` is what CI runs (.ci/run); `make run` is the demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv lint typecheck test run
# Prerequisites run in the order written, even under `make -j`.
.NOTPARALLEL:

venv: $(VENV)/.installed

# The stamp makes `make venv` a no-op until pyproject.toml changes; pip only runs when it must.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; like any non-zero exit, that fails the target.
test: venv lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

run: venv
	$(BIN)/adpulse dev --simulate
