# Two entry points, both idempotent: `make run` (the main job) and `make test`
# (lint, format check, type check, the whole test suite). Each creates or
# updates .venv/ in the repository root first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.acepilot-installed
EXTRAS := build,train,bench,dev,team,eval

.PHONY: run test venv lint system-deps extension-lint

venv: $(STAMP)

# torch first and pinned: this machine ships a CPU wheel of 2.13.0, and an
# unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/acepilot demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Chromium/ripgrep for the VS Code end-to-end test, Go/OpenSSL for HumanEval-X,
# nginx for the scale-out test: installed when missing and we may (root/sudo).
system-deps:
	bash scripts/install-system-deps.sh

# The VS Code extension: `npm ci` when package-lock.json changed, then tsc --noEmit
# (strict) and eslint. Its unit tests (node --test) and the end-to-end test in a
# real VS Code run under pytest (tests/extension/). Skipped, loudly, without npm.
extension-lint:
	@if ! command -v npm >/dev/null; then echo "extension-lint: SKIPPED, npm is not installed (Node 20+)"; exit 0; fi; \
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
		npm ci --no-audit --no-fund && touch node_modules/.package-lock.json; fi; \
	npm run lint

test: lint extension-lint system-deps
	$(VENV)/bin/pytest
