# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export UGDATA_ROOT ?= $(CURDIR)/data
# BLAS uses every core for the dataset stages; training and evaluation fix their own thread count (2), so the
# numbers they print do not depend on the machine's cores.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install home run study test lint dev bench mutation clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The instance template lives in deploy/ (a dagster.yaml in the project root makes `dagster dev` warn that it is unused).
INSTANCE_TEMPLATE := deploy/dagster-local.yaml

home: $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: $(INSTANCE_TEMPLATE) $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	cp $(INSTANCE_TEMPLATE) $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster instance concurrency set gpu 1 >/dev/null

## make run: every stage for the bundled cities on the offline twins (dataset per city, the UGE model family with
## one training seed, the benchmark), then the benchmark table. A second `make run` with no change does nothing.
RUN_INPUTS := $(shell git ls-files ugdata_pipeline cities.yaml cities-study.yaml $(INSTANCE_TEMPLATE) pyproject.toml 2>/dev/null)
# Every run is launched through workspace.yaml's code location, as the UI launches runs, so the jobs' Runs tabs, the
# Overview timeline and run-status sensors see it; `launch` executes it here, waits, and fails when the run fails.
# One process per run (EXECUTION=in_process, run config): on a laptop, spawning a process per step costs more than
# the parallelism gains. EXECUTION=multiprocess runs each step in its own process.
EXECUTION ?= in_process
LAUNCH = $(PY) -m ugdata_pipeline.cli launch $(if $(filter in_process,$(EXECUTION)),--in-process)

# The whole sample run: every offline city of $(UGDATA_CITIES), then training_job, then benchmark_job; each run's
# log goes to $(DAGSTER_HOME)/last_run_*.log and is shown when it fails. Runs killed earlier are released first
# (marked failed, their `gpu` pool slot freed), so a stale slot never blocks this run.
define PIPELINE
	@mkdir -p $(UGDATA_ROOT)
	@$(PY) -m ugdata_pipeline.cli release-dead-runs
	@for city in $$($(PY) -m ugdata_pipeline.cli cities --offline); do \
		echo "== dataset: $$city"; \
		$(LAUNCH) city_dataset_job --partition $$city > $(DAGSTER_HOME)/last_run_$$city.log 2>&1 \
			|| { tail -40 $(DAGSTER_HOME)/last_run_$$city.log; exit 1; }; \
	done
	@for job in training_job benchmark_job; do \
		echo "== $$job"; \
		$(LAUNCH) $$job > $(DAGSTER_HOME)/last_run_$$job.log 2>&1 \
			|| { tail -40 $(DAGSTER_HOME)/last_run_$$job.log; exit 1; }; \
	done
endef

run: install home $(UGDATA_ROOT)/.make-run-stamp
	@$(PY) -m ugdata_pipeline.cli summary

$(UGDATA_ROOT)/.make-run-stamp: $(RUN_INPUTS)
	$(PIPELINE)
	@touch $@

## make study: the larger offline study of cities-study.yaml (a Vancouver clip to train on; Ankara, Valletta and
## Karhula held out), three training seeds and a longer budget, the full report with the matched control and the
## graph ablations. Data under data-study/ (or UGDATA_STUDY_ROOT).
STUDY_ROOT ?= $(CURDIR)/data-study
study: export UGDATA_CITIES = $(CURDIR)/cities-study.yaml
study: export UGDATA_ROOT = $(STUDY_ROOT)
study: export UGDATA_SEEDS ?= 0,1,2
study: export UGDATA_TRAIN_STEPS ?= 400
study: install home
	@$(MAKE) --no-print-directory $(STUDY_ROOT)/.make-study-stamp
	@$(PY) -m ugdata_pipeline.cli summary

$(STUDY_ROOT)/.make-study-stamp: $(RUN_INPUTS)
	$(PIPELINE)
	@touch $@

## make test: lint (ruff check, ruff format --check), then the whole test suite (includes a reduced sample run).
test: install home
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## make dev: the Dagster UI on http://127.0.0.1:3000 with every asset and its city partitions.
dev: install home
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## make mutation: mutation testing (mutmut) of the core's metrics, splits, reasoning path search and place graph, and losses against the
## tests that reach them; not part of `make test` (minutes). Lists the surviving mutants; `mutmut show <name>`.
mutation: install
	$(PY) -m pip install --quiet "mutmut>=3.8,<4"
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache
