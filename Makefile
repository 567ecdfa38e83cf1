# `make demo` and `make test` work on a fresh clone: each creates .venv and installs first.
# CPU machines: torch==2.13.0 is installed first (a CPU build). On a GPU machine, install the
# torch build for your CUDA first (see https://pytorch.org), then `make install TORCH=`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install -q "$(TORCH)"; fi
	$(BIN)/python -m pip install -q -e ".[metrics,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sd-sparse demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check sd_sparse tests benchmarks
	$(BIN)/ruff format --check sd_sparse tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/sparse_coding.py

clean:
	rm -rf $(VENV)
