# infleet — `make demo` runs a local fleet, `make test` passes the tests.
# Both install what they need (idempotent); heavy artefacts live in $(CACHE).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CACHE ?= $(HOME)/.cache/infleet
VENV ?= $(CACHE)/venv
# This checkout's overlay on the shared dependency venv (scripts/bootstrap.sh).
LOCAL_VENV := $(CURDIR)/.venv
PY := $(LOCAL_VENV)/bin/python
export INFLEET_CACHE := $(CACHE)
export INFLEET_DEPS_VENV := $(VENV)
export INFLEET_VENV := $(LOCAL_VENV)
export PATH := $(LOCAL_VENV)/bin:$(VENV)/bin:$(PATH)
# Test/bench/demo code finds its shared helpers here (e2e/testkit.py, tests/redis_fixtures.py,
# the harness): no module edits sys.path.
export PYTHONPATH := $(CURDIR)/e2e:$(CURDIR)/bench:$(CURDIR)/tests
PYTEST_ARGS ?=

.PHONY: all bootstrap chart-sync k8s-bins test unit e2e lint crds crds-check demo cluster-up cluster-down bench gpu-check clean

all: test

bootstrap:
	@scripts/bootstrap.sh

## Kubernetes control plane binaries built from Go modules, cached by version.
k8s-bins: bootstrap
	@$(PY) -m kube_harness.build

lint: bootstrap
	$(VENV)/bin/ruff check operator worker tests e2e bench
	$(VENV)/bin/ruff format --check operator worker tests e2e bench
	$(PY) -m mypy
	$(VENV)/bin/hadolint Dockerfile.operator Dockerfile.worker
	@if command -v cargo >/dev/null; then \
	  cargo fmt --check --manifest-path worker/native/Cargo.toml; \
	  CARGO_TARGET_DIR=$(CACHE)/cargo-target cargo clippy --quiet --release --locked \
	    --manifest-path worker/native/Cargo.toml -- -D warnings; fi

crds: bootstrap
	$(PY) -m infleet_operator.cli crd --out crds/
	$(PY) tests/test_delivery_sync.py  # the chart's and kustomize base's copies

chart-sync: bootstrap
	$(PY) tests/test_delivery_sync.py

crds-check: bootstrap
	$(PY) -m infleet_operator.cli crd --check crds/

unit: bootstrap
	$(PY) -m pytest tests $(PYTEST_ARGS)

e2e: k8s-bins
	$(PY) -m pytest e2e $(PYTEST_ARGS)

test: bootstrap k8s-bins lint crds-check
	$(PY) -m pytest tests e2e $(PYTEST_ARGS)

demo: k8s-bins
	$(PY) -m fleet.demo

cluster-up: k8s-bins
	$(PY) -m kube_harness.cli up

cluster-down: bootstrap
	$(PY) -m kube_harness.cli down

bench: bootstrap
	@echo "see bench/README.md: each bench/*.py prints its own figures"

## Every GPU path on a real GPU in <= 5 minutes, one table (docs/engine.md, "make gpu-check").
## Needs only a python3 with torch (no venv, no registry); without a GPU it says so, exits 0.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
