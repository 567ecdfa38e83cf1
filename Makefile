# `make demo` and `make test` work on a fresh clone: each creates .venv if missing and installs first,
# from requirements/lock.txt (the exact versions the suite was verified with; `make lock` regenerates it).
# CPU machines: $(TORCH) (torch==2.13.0, a CPU build) is installed first. On a GPU machine, install the
# torch build for your CUDA first (see https://pytorch.org), then `make install TORCH=`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
# the lock's torch line: the CPU build the suite was verified with (it lies on this project's machines;
# elsewhere PyTorch's CPU index serves it)
LOCK_TORCH := torch==2.13.0+cpu
LATEST := .venv-latest
# pytest-xdist workers for the suite (one thread each; tests/conftest.py): CI has 2 cores
TEST_WORKERS ?= 2
# where `make lock` finds the CPU build: this project's machines keep it on disk, elsewhere PyPI has none
TORCH_SOURCE := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: install demo test test-latest test-lowest lock lint docs bench clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install -q "$(TORCH)"; fi
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q -r $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sd-sparse demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --durations=15

# Regenerates the lock from pyproject.toml's ranges: the newest versions they allow today, for CPython 3.11
# on Linux x86_64, with the CPU build of torch. Needs uv (`pip install uv`, or the one in .venv).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install -q uv
	echo "$(LOCK_TORCH)" > $(VENV)/lock-constraints.txt
	$(BIN)/uv pip compile pyproject.toml --extra metrics --extra dev --upgrade --quiet \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
		--constraint $(VENV)/lock-constraints.txt --custom-compile-command "make lock" -o $(LOCK)

# The suite against the newest versions pyproject.toml's ranges allow, in its own venv. torch stays the
# CPU build $(TORCH) (a newer torch is a multi-GB CUDA build); everything else is upgraded eagerly.
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	echo "$(TORCH)" > $(LATEST)/torch-constraint.txt
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager \
		-c $(LATEST)/torch-constraint.txt -e ".[dev]"
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/python -m pytest tests -n $(TEST_WORKERS) --durations=15

# The fast tests against the oldest versions pyproject.toml's lower bounds allow (uv's lowest-direct
# resolution; torch stays the CPU build), in its own venv: how the declared lower bounds were found.
LOWEST := .venv-lowest
FAST_TESTS := tests/test_batch_omp.py tests/test_bottlenecks.py tests/test_codes_container.py \
	tests/autoencoders/test_coded_autoencoders.py tests/pipelines/test_dictionary_latent_pipeline.py \
	tests/test_imports.py tests/test_models_and_losses.py tests/test_data.py
test-lowest:
	test -x $(BIN)/uv || $(MAKE) lock
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	echo "$(LOCK_TORCH)" > $(LOWEST)/constraints.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --resolution lowest-direct --quiet --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) --constraint $(LOWEST)/constraints.txt \
		-o $(LOWEST)/lowest.txt
	if [ -n "$(TORCH)" ]; then $(LOWEST)/bin/python -m pip install -q "$(TORCH)"; fi
	grep -v '^torch==' $(LOWEST)/lowest.txt > $(LOWEST)/lowest-without-torch.txt
	$(LOWEST)/bin/python -m pip install -q -r $(LOWEST)/lowest-without-torch.txt
	$(LOWEST)/bin/python -m pip install -q --no-deps -e .
	SD_SPARSE_CACHE=$(LOWEST)/cache $(LOWEST)/bin/python -m pytest $(FAST_TESTS) -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check sd_sparse tests benchmarks train pipelines docs/hooks
	$(BIN)/ruff format --check sd_sparse tests benchmarks train pipelines docs/hooks

# The documentation site (docs/, mkdocs.yml) into site/: offline, and a warning is an error (tests/test_docs.py too)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/sparse_coding.py

clean:
	rm -rf $(VENV) $(LATEST) $(LOWEST) site
