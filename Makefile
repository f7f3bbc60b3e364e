# make run    set up .venv and run the paper-ablation DAG on the embedded default
# make test   set up .venv, lint, and run the test suite
# make setup  set up .venv only (a no-op when it is current)
# make servers / make servers-down   Prefect + MLflow servers and a CPU and a GPU worker
#             on 127.0.0.1 (state in .servers/; `source .servers/env` for clients)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, as its CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PRESET ?= paper-ablation

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Idle OpenMP threads sleep rather than spin (torch slows ~10x on 2 busy cores otherwise).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup run plan test lint clean servers servers-down

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" || $(BIN)/python -m pip install --quiet torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/solar run --preset $(PRESET)

plan: setup
	$(BIN)/solar plan --preset $(PRESET)

test: setup
	$(BIN)/ruff check solar tasks flows tests deployments benchmarks
	$(BIN)/python -m pytest -q

servers: setup
	$(BIN)/python deployments/servers.py up

servers-down:
	$(BIN)/python deployments/servers.py down

lint: setup
	$(BIN)/ruff check solar tasks flows tests deployments benchmarks

clean:
	rm -rf artifacts mlruns mlflow.db .pytest_cache .servers
