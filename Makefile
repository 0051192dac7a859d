# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export UGDATA_ROOT ?= $(CURDIR)/data
# Fewer BLAS threads than cores: the pipeline already runs steps in parallel.
export OMP_NUM_THREADS ?= 1

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

## make run: build every stage of the bundled cities (offline twins), then print a summary.
run: install home
	@for city in $$($(PY) -m ugdata_pipeline.cli cities --offline); do \
		echo "== $$city"; \
		$(VENV)/bin/dagster job execute -m ugdata_pipeline.definitions -j sample_job \
			--tags "{\"dagster/partition\": \"$$city\"}" > $(DAGSTER_HOME)/last_run_$$city.log 2>&1 \
			|| { tail -40 $(DAGSTER_HOME)/last_run_$$city.log; exit 1; }; \
	done
	$(PY) -m ugdata_pipeline.cli summary

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
	$(PY) benchmarks/bench_graph.py

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache
