# vdimport developer commands. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/.venv-cli/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: help setup lock lint format typecheck test test-fast soak demo images images-test preflight down bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## create .venv (pinned) and install the Debian packages the tests need (as root)
	@scripts/setup.sh

lock: ## re-resolve requirements.lock from requirements.in
	@scripts/lock.sh

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup ## mypy on the project's own packages
	$(BIN)/mypy local/vdimport_local images/worker/vdimport_worker images/function/vdimport_function dags

# The step-runner and emulator suites start their own emulator per pytest-xdist worker and share
# nothing else, so they run on both cores; the suites that start Airflow or a local stack run
# one at a time after them.
PARALLEL_SUITES := tests/worker tests/emulator

test: setup lint typecheck ## lint, type-check and run the whole test suite
	$(BIN)/python -m pytest -n 2 $(PARALLEL_SUITES) $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(addprefix --ignore=,$(PARALLEL_SUITES)) $(PYTEST_ARGS)

test-fast: setup ## the test suite only
	$(BIN)/python -m pytest -x $(PYTEST_ARGS)

soak: setup ## concurrency soak: 20 uploads at once through the local stack (VDIMPORT_SOAK_COUNT), 8 GiB OVAs, tables at the end
	VDIMPORT_SOAK_COUNT=$${VDIMPORT_SOAK_COUNT:-20} VDIMPORT_SOAK_LARGE=$${VDIMPORT_SOAK_LARGE:-1} $(BIN)/python -m pytest tests/soak -p no:cacheprovider $(PYTEST_ARGS)

demo: setup ## local stack up, import a sample disk image through event, function and DAG, print the report
	$(BIN)/python -m vdimport_local.demo $(DEMO_ARGS)

bench: setup ## measure the data path, the download and the local pipeline; tables in bench/results/
	$(BIN)/python -m bench.run $(BENCH_ARGS)

images: setup ## build images/worker and images/function with podman (base from debootstrap, cached); sizes in bench/results/images.json
	@scripts/images.sh

images-test: images ## the images' contract tests (tests/images), and one import with every step and the trigger in the images
	$(BIN)/python -m pytest tests/images $(PYTEST_ARGS)

preflight: setup ## check a real deployment before the first upload: PREFLIGHT_ARGS="--context <kube context> [--oci-profile P]"
	$(BIN)/vdimport-local preflight $(PREFLIGHT_ARGS)

down: setup ## stop the local stack (vdimport-local down)
	$(BIN)/vdimport-local down

clean: ## remove the virtualenvs and caches
	rm -rf $(VENV) .venv-cli .venv-function .venv-checkov .venv-uv tools/hcl2json/node_modules tools/playwright/node_modules .pytest_cache .mypy_cache .ruff_cache
