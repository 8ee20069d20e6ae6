# Two commands set everything up on a fresh machine:
#   make up     run the product (embedded FalkorDB, API, one node agent)
#   make test   run the tests (starts its own FalkorDB and Neo4j servers)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: up test lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/controlplane up $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check controlplane graph_schema workers tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: $(STAMP)
	bash scripts/ensure-system-deps.sh
	bash tests/neo4j_harness/prepare.sh
	bash tests/gremlin_harness/prepare.sh
	$(VENV)/bin/ruff check controlplane graph_schema workers tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	bash tests/neo4j_harness/prepare.sh
	$(VENV)/bin/python -m bench.bench_spawn
	$(VENV)/bin/python -m bench.bench_celery
	$(VENV)/bin/python -m bench.bench_descendants
	$(VENV)/bin/python -m bench.bench_recovery
	$(VENV)/bin/python -m bench.bench_jobs

clean:
	rm -rf $(VENV) .controlplane tests/neo4j_harness/target
