# recsys_ssl: every target creates or refreshes .venv from setup.py when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLI := $(BIN)/recsys-ssl

# Where a pipeline run keeps its artifacts, and which dataset it runs on.
RUN_DIR ?= runs/demo
DATASET ?= synthetic_catalog/10k
# The shipped default method (recsys_ssl/registry.py DEFAULT_CONFIG: validation's pick, issue 15).
CONFIG ?= data/configs/ssl_dropout_only.yaml
TRIALS ?= 40
FRACTION ?= full
PYTEST_ARGS ?=

.PHONY: venv lint test demo data stats mi tune train evaluate experiment export serve bench peers clean

venv: $(STAMP)

# The stamp depends on setup.py: a changed pin reinstalls, a second run does nothing.
$(STAMP): setup.py
	@if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
		echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# ruff (pyproject.toml): the linter and the formatter's check; `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q --durations=20 $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(CLI) demo --run-dir $(RUN_DIR)

data: $(STAMP)
	$(CLI) data --dataset $(DATASET) --run-dir $(RUN_DIR)

stats: $(STAMP)
	$(CLI) stats --dataset $(DATASET) --run-dir $(RUN_DIR)

mi: $(STAMP)
	$(CLI) mi --dataset $(DATASET) --run-dir $(RUN_DIR)

# A resumable Optuna study on DATASET's validation carve-out (the statistics and MI jobs first,
# when this run has none): writes $(RUN_DIR)/tuned/<config>[-10pct].yaml.
tune: $(STAMP)
	@test -f $(RUN_DIR)/stats/manifest.json || $(CLI) stats --dataset $(DATASET) --run-dir $(RUN_DIR)
	@test -f $(RUN_DIR)/mi/manifest.json || $(CLI) mi --dataset $(DATASET) --run-dir $(RUN_DIR)
	$(CLI) tune --dataset $(DATASET) --config $(CONFIG) --data-fraction $(FRACTION) --trials $(TRIALS) --run-dir $(RUN_DIR)

train: $(STAMP)
	$(CLI) train --config $(CONFIG) --run-dir $(RUN_DIR)

evaluate: $(STAMP)
	$(CLI) evaluate --config $(CONFIG) --run-dir $(RUN_DIR)

experiment: $(STAMP)
	$(CLI) experiment --run-dir $(RUN_DIR)

export: $(STAMP)
	$(CLI) export --config $(CONFIG) --run-dir $(RUN_DIR)

serve: $(STAMP)
	$(CLI) serve --run-dir $(RUN_DIR)

bench: $(STAMP)
	$(BIN)/python bench/mi_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/eval_bench.py
	$(BIN)/python bench/serve_bench.py

# The peer systems of ../shared/bench/PROTOCOL.md (implicit, LightFM: the "bench" extra).
peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/peers.py --dataset frappe --dataset movielens/100k-user-item --run-dir runs/peers --out bench/results/peers

clean:
	rm -rf runs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
