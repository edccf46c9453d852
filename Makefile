# Two commands do everything on a fresh machine:
#   make run   - set up .venv, train the default CNN on the bundled MNIST, write its report under runs/
#   make test  - set up .venv with dev tools, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build through constraints.txt (a bare `torch` pulls GBs of CUDA).
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: all venv dev run test test-fast browser-deps bench clean help
all: help

help:
	@echo "make run    train the default cnn on bundled MNIST (report under runs/)"
	@echo "make test   run the test suite (sets itself up)"
	@echo "make venv   only set up .venv"
	@echo "make bench  run the benchmarks (slow; see README)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files make set-up idempotent: reinstall only when the dependency lists change.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

run: venv
	$(BIN)/digitlab train --model cnn

# Chromium for the browser test; installed if missing and we may (root + apt). Without it
# the browser test is skipped with its reason printed.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "note: chromium not installed; the browser test will be skipped"

test: dev browser-deps
	$(BIN)/python -m pytest -q

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: dev
	$(BIN)/python benchmarks/zoo.py

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
