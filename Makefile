# The one command surface. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline by design: nothing may be fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: help venv demo rehearse test test-fast compile submit images serve serve-stop bench bench-serve lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@echo "== creating $(VENV) and installing the pinned stack (one-time, ~6 min)"
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(PY) -m pip install -q -c requirements/constraints.txt --upgrade pip && \
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[dev]" && \
	echo "== dependency install took $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install everything (pinned; CPU torch)

demo: $(STAMP)  ## the whole pipeline end to end on this machine, including serving
	$(PY) -m pipelines demo

rehearse: $(STAMP)  ## the whole pipeline at Nemotron 3.5's real size (600 M shape, recipe nemotron35), ~25 min
	$(PY) -m pipelines rehearse

test: $(STAMP)  ## unit + component (kfp.local) + e2e tests (real NeMo, MLflow, DVC, tritonserver)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## tests without the slow ones
	$(PY) -m pytest -q -m "not slow"

compile: $(STAMP)  ## write pipeline.yaml for the Kubeflow UI
	$(PY) -m pipelines compile --out pipeline.yaml

submit: $(STAMP)  ## submit to Kubeflow: make submit HOST=https://... ARGS="--set target_langs=ro-RO"
	@test -n "$(HOST)" || { echo "usage: make submit HOST=<KFP API URL> [ARGS='--set name=value ...']"; exit 2; }
	$(PY) -m pipelines submit --host $(HOST) $(ARGS)

.PHONY: base-image docker-up docker-down test-containers
DOCKER_ENV = DOCKER_HOST=$$($(PY) -m tests.containers.dockerd host) || { echo "error: no Docker engine answers; make docker-up starts one"; exit 2; }; export DOCKER_HOST;
images: $(STAMP)  ## build the component + Triton images, print their sizes (docs/CLUSTER.md: BASE_IMAGE, WHEELS)
	PY=$(PY) infra/docker/build.sh

base-image: $(STAMP)  ## Debian bookworm + Python 3.11 base via debootstrap, for machines without a registry
	@$(DOCKER_ENV) infra/docker/base-image.sh

docker-up: $(STAMP)  ## start this project's dockerd unless an engine answers (data root /var/lib/asr-docker)
	@$(PY) -m tests.containers.dockerd up

docker-down: $(STAMP)  ## stop the dockerd that docker-up started (never another engine)
	@$(PY) -m tests.containers.dockerd down

test-containers: $(STAMP)  ## every pipeline step in its image (DockerRunner) == subprocess; Triton image serves
	@$(DOCKER_ENV) ASR_CONTAINER_TESTS=1 timeout 2700 $(PY) -m pytest -q -p no:cacheprovider tests/containers

serve: $(STAMP)  ## start the real tritonserver over triton_repo/ (stop with make serve-stop)
	$(PY) -m serving start --repo triton_repo

serve-stop:  ## stop the server started by make serve
	$(PY) -m serving stop

bench: $(STAMP)  ## benchmarks (print ratios measured in one run)
	@ls tests/bench/*.py >/dev/null 2>&1 && for f in tests/bench/bench_*.py; do $(PY) $$f || exit 1; done || echo "no benchmarks yet"

bench-serve: $(STAMP)  ## Triton load benchmark (ARGS="--via gateway --model X.nemo --quick"; prints ratios)
	$(PY) tests/bench/bench_serve.py $(ARGS)

lint: $(STAMP)  ## ruff check + ruff format --check + the layer contract (import-linter); same hooks as pre-commit
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:  ## remove generated state (keeps .venv and the DVC remote)
	rm -rf outputs .cache .mlflow pipeline.yaml data triton_repo/asr_offline triton_repo/asr_streaming
