# The two README commands: `make run` (the local stack) and `make test` (the suite).
# Both create .venv on first use and install exactly the versions in uv.lock; they
# reinstall only when the lock or pyproject.toml changes. `make lock` refreshes the lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-production lint lock lock-check fmt bench clean chromium

# --- installs: pinned tools, then the lock -------------------------------------------
# uv.lock is the lock (uv resolves it for every platform and Python >= 3.11 and records
# each file's hash); requirements/*.txt are its exports, which pip installs with
# --require-hashes, so an install takes the same files from whichever index pip is set
# up to use. The tools are pinned here; their versions name the stamp, so a bump
# reinstalls them.
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
UV := $(BIN)/uv
TOOLS := $(VENV)/.tools-pip$(PIP_VERSION)-uv$(UV_VERSION)
# uv never fetches a Python of its own: the lock is made with the venv's interpreter.
export UV_PYTHON_DOWNLOADS := never

$(TOOLS):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==$(PIP_VERSION) uv==$(UV_VERSION)
	touch $@

# pip check: with --no-deps nothing else would notice a lock that misses a dependency
# pyproject.toml declares (lock-check names the fix).
$(STAMP): $(TOOLS) pyproject.toml requirements/dev.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check || { echo "the lock does not fit pyproject.toml: run 'make lock'"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# $(call export_lock,UV EXPORT OPTIONS,FILE): one export of uv.lock, written the same
# way by `lock` and `lock-check`.
export_lock = { echo "\# Generated from uv.lock by 'make lock'; do not edit."; \
	$(UV) export --quiet --frozen --no-header --no-emit-project $(1); } > $(2)
RUNTIME_EXPORT := --no-dev
DEV_EXPORT := --extra dev

# The one command to refresh the lock after editing dependencies in pyproject.toml. It
# keeps every locked version that still fits; `make lock LOCK_ARGS=--upgrade` (or
# `--upgrade-package NAME`) moves to newer releases.
lock: $(TOOLS)
	$(UV) lock $(LOCK_ARGS)
	@mkdir -p requirements
	$(call export_lock,$(RUNTIME_EXPORT),requirements/runtime.txt)
	$(call export_lock,$(DEV_EXPORT),requirements/dev.txt)

# Fails when pyproject.toml's dependencies changed without `make lock`, or an export was
# edited by hand. A newer release on PyPI does not make the lock stale.
lock-check: $(TOOLS)
	@$(UV) lock --check --quiet || \
		{ echo "uv.lock does not match pyproject.toml: run 'make lock' and commit"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(call export_lock,$(RUNTIME_EXPORT),$$tmp/runtime.txt) && \
		$(call export_lock,$(DEV_EXPORT),$$tmp/dev.txt) && \
		for f in runtime dev; do \
			cmp -s "$$tmp/$$f.txt" requirements/$$f.txt || \
			{ echo "requirements/$$f.txt is not uv.lock's export: run 'make lock'"; exit 1; }; \
		done

run: $(STAMP)
	$(BIN)/geniectl dev --demo

lint: $(STAMP) lock-check
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
