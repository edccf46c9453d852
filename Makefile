# Two commands do everything on a fresh machine:
#   make run   - set up .venv, train the default CNN on the bundled MNIST, write its report under runs/
#   make test  - set up .venv with dev tools, then run the test suite
# `make help` lists every target.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned through constraints.txt. Where pip's default index serves the CUDA build of
# torch (Linux x86-64: several GB of CUDA packages), take the CPU wheels from PyTorch's index:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Left empty, pip's own configuration decides (here: a local CPU wheel).
TORCH_INDEX ?=
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt \
          $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

.PHONY: all venv dev run test test-fast browser-deps fonts bench clean help
all: help ## the same as make help

help: ## list the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "(TORCH_INDEX=URL: install torch from that index, e.g. https://download.pytorch.org/whl/cpu)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files make set-up idempotent: reinstall only when the dependency lists change.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || echo "installing torch $(if $(TORCH_INDEX),from $(TORCH_INDEX),from pip's default index: where that is the CUDA build this is several GB; make run TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU build)"
	$(PIP) -e '.[train]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[train,dev]'
	@touch $@

venv: $(VENV)/.installed ## only set up .venv (then use .venv/bin/digitlab)
dev: $(VENV)/.installed-dev ## set up .venv with the test tools

run: venv ## train the default cnn on bundled MNIST (report under runs/)
	$(BIN)/digitlab train --model cnn

# Chromium for the browser test; installed if missing and we may (root + apt). Without it
# the browser test is skipped with its reason printed.
browser-deps: ## install Chromium for the browser test if missing (root + apt)
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "note: chromium not installed; the browser test will be skipped"

# The font packages that renderer A prints training look-alikes with (digitlab.glyphs.TRAINING_FONTS)
# and those the benchmarks score with (benchmarks/realworld.py SCORING_FONTS). Only rebuilding the
# shipped model and running the benchmarks need them; without them both use what is installed.
fonts: venv ## install the fonts the shipped model's recipe and the benchmarks print with (root + apt)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  $$($(BIN)/python -c "import sys; sys.path.insert(0, 'benchmarks'); from realworld import SCORING_FONTS; from digitlab.glyphs import TRAINING_FONTS; print(*sorted({*TRAINING_FONTS.values(), *SCORING_FONTS.values()}))")

test: dev browser-deps ## run the whole test suite (sets itself up)
	$(BIN)/python -m pytest -q

test-fast: dev ## the suite without the slow and browser tests
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: dev ## the model-zoo benchmark (slow; see docs/development.md)
	$(BIN)/python benchmarks/zoo.py

clean: ## remove .venv, runs/ and build leftovers
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
