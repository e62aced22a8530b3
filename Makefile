# Airlock developer commands. `make help` lists them.

.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := libs/core libs/client services/ingest services/redactor services/llm-worker services/auditor libs/devstack
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
# Pins apply to build backends too (hatchling is in constraints.txt).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install jars run test unit integration faults bench lint format constraints clean
.PHONY: chart-test chart-topics images
.PHONY: eval

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): constraints.txt requirements-dev.txt $(PYPROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s): install it and re-run, or set PYTHON=python3.11" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	@touch $@

install: $(STAMP) ## Create .venv and install every package, pinned by constraints.txt

jars: install ## Resolve the Kafka broker's jars through Maven (cached in ~/.cache/airlock)
	$(BIN)/python -c 'from airlock.devstack.kafka import ensure_jars; print(ensure_jars())'

run: install ## Start the local mesh (Kafka, fake or real OpenAI, four services) and a demo
	$(BIN)/airlock dev up

test: install ## Run unit and integration tests (starts its own Kafka broker)
	$(BIN)/pytest

unit: install ## Run the unit tests only (no network, no broker)
	$(BIN)/pytest tests/unit

integration: install ## Run the integration tests only (real broker, fake OpenAI, real Presidio)
	$(BIN)/pytest tests/integration

faults: install ## Run the fault suite only (kills services, scales, breaks the model, restarts the broker; prints the books)
	$(BIN)/pytest -m faults tests/faults

bench: install ## Benchmarks (~30 min): whole mesh, stages, LiteLLM side by side -> bench/results/<date>/ (BENCH_ARGS=--quick)
	$(BIN)/airlock bench $(BENCH_ARGS)

eval: install ## Redaction leakage and utility per entity type: Airlock vs plain Presidio (same model)
	$(BIN)/python -m airlock.devstack.eval

chart-test: install ## Render, lint and validate the Helm chart (real Helm engine, offline) and check the images
	$(BIN)/pytest tests/chart

chart-topics: install ## Regenerate the chart's topic table (charts/airlock/files/topics.yaml) from Topics.specs
	$(BIN)/airlock ops chart-topics > charts/airlock/files/topics.yaml

# Images: airlock/<name>:<chart appVersion>, built from the repository root. An engine counts
# only when it can build (a docker client without a reachable daemon does not): with none,
# `make images` says so and exits 0 (nothing to build here is not an error); set
# REQUIRE_ENGINE=1 to make it fail instead (make exits 2; CI that must produce images).
IMAGE_PREFIX ?= airlock
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*/\1/p' charts/airlock/Chart.yaml)
CONTAINER_ENGINES ?= docker podman
IMAGES := ingest:services/ingest redactor:services/redactor llm-worker:services/llm-worker auditor:services/auditor cli:libs/devstack

images: ## Build the four service images and the CLI image (docker or podman; says so when neither can build)
	@engine=""; \
	for candidate in $(CONTAINER_ENGINES); do \
	  if command -v $$candidate >/dev/null 2>&1 && $$candidate info >/dev/null 2>&1; then engine=$$candidate; break; fi; \
	done; \
	if [ -z "$$engine" ]; then \
	  echo "make images: no container engine can build here (tried: $(CONTAINER_ENGINES); a client whose daemon is not running does not count)."; \
	  echo "make images: nothing was built. Start Docker or install Podman and run 'make images' again."; \
	  exit $(if $(REQUIRE_ENGINE),3,0); \
	fi; \
	for image in $(IMAGES); do \
	  name=$${image%%:*}; dir=$${image#*:}; \
	  echo "$$engine build -f $$dir/Dockerfile -t $(IMAGE_PREFIX)/$$name:$(IMAGE_TAG) ."; \
	  $$engine build -f $$dir/Dockerfile -t $(IMAGE_PREFIX)/$$name:$(IMAGE_TAG) . || exit $$?; \
	done

lint: install ## Ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

constraints: ## Re-pin constraints.txt from a fresh resolution (review the diff)
	rm -rf $(VENV)
	PIP_CONSTRAINT= $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT= $(BIN)/python -m pip install --quiet -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	(echo "# Exact versions of every third-party package (and the build backend), for 'pip install -c'."; \
	 echo "# Regenerate with: make constraints"; \
	 $(BIN)/python -m pip freeze --exclude-editable) > constraints.txt
	@touch $(STAMP)

clean: ## Remove .venv, caches and local stack state (.airlock)
	rm -rf $(VENV) .airlock .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
