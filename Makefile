# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export UGDATA_ROOT ?= $(CURDIR)/data
# Torch and BLAS use every core: `make run` executes one step at a time (in-process executor).
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install home run test lint dev bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

home: $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster instance concurrency set gpu 1 >/dev/null

## make run: every stage for the bundled cities on the offline twins (dataset per city, training, benchmark),
## then the benchmark table. A second `make run` with no source or registry change does nothing again.
RUN_STAMP := $(UGDATA_ROOT)/.make-run-stamp
RUN_INPUTS := $(shell git ls-files ugdata_pipeline cities.yaml dagster.yaml pyproject.toml 2>/dev/null)
EXECUTE := $(VENV)/bin/dagster job execute -m ugdata_pipeline.definitions

# One process per run: on a laptop, spawning a process per step costs more than the parallelism gains.
run: export UGDATA_EXECUTOR ?= in_process
run: install home $(RUN_STAMP)
	@$(PY) -m ugdata_pipeline.cli summary

$(RUN_STAMP): $(RUN_INPUTS)
	@mkdir -p $(UGDATA_ROOT)
	@for city in $$($(PY) -m ugdata_pipeline.cli cities --offline); do \
		echo "== dataset: $$city"; \
		$(EXECUTE) -j city_dataset_job --tags "{\"dagster/partition\": \"$$city\"}" \
			> $(DAGSTER_HOME)/last_run_$$city.log 2>&1 || { tail -40 $(DAGSTER_HOME)/last_run_$$city.log; exit 1; }; \
	done
	@for job in training_job benchmark_job; do \
		echo "== $$job"; \
		$(EXECUTE) -j $$job > $(DAGSTER_HOME)/last_run_$$job.log 2>&1 \
			|| { tail -40 $(DAGSTER_HOME)/last_run_$$job.log; exit 1; }; \
	done
	@touch $(RUN_STAMP)

## make test: lint, then the whole test suite (includes a `dagster job execute` smoke run).
test: install home
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

## make dev: the Dagster UI on http://127.0.0.1:3000 with every asset and its city partitions.
dev: install home
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache
