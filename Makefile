# Two commands set everything up on a fresh machine:
#   make up     run the product (embedded FalkorDB, API, one node agent)
#   make test   run the tests (starts its own FalkorDB, Neo4j, Gremlin Server, Cassandra and JanusGraph servers)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: up test lint bench clean
# the JVM test servers, built by one script (Maven resolves their jars from Maven Central)
JVM_HARNESSES := tests/neo4j_harness tests/gremlin_harness tests/cassandra_harness tests/janusgraph_harness

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
	bash tests/jvm_harness/prepare.sh $(JVM_HARNESSES)
	$(VENV)/bin/ruff check controlplane graph_schema workers tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	bash tests/jvm_harness/prepare.sh $(JVM_HARNESSES)
	$(VENV)/bin/python -m bench.bench_spawn
	$(VENV)/bin/python -m bench.bench_celery
	$(VENV)/bin/python -m bench.bench_descendants
	$(VENV)/bin/python -m bench.bench_recovery
	$(VENV)/bin/python -m bench.bench_jobs

clean:
	rm -rf $(VENV) .controlplane tests/*_harness/target
