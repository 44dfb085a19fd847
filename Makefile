# The two README commands: `make run` (the local stack) and `make test` (the suite).
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-production lint fmt bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/geniectl dev --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint chromium
	$(BIN)/pytest
	$(MAKE) test-production

# The workflow suite again, against the simulator's production profile (every behaviour
# reported from the live API; docs/simulator.md). The fault suite's production stack runs
# in the pass above (tests/faults/test_production.py). The key settle window is off here,
# since the tests read the API with the worker's key; E11 answers 404 in production, so
# the test of a fresh link is left out.
test-production: $(STAMP)
	GENIE_SIM_PROFILE=production GENIE_SIM_AUTH_SETTLE_SECONDS=0 $(BIN)/pytest tests/workflow \
		--deselect tests/workflow/test_connections.py::test_auth_link_refresh_returns_a_fresh_link

# tests/browser drives Debian's Chromium (never Playwright's browser download). It is
# installed here when missing and we are root, as in CI; otherwise those tests fail and
# say what to run.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for tests/browser"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
