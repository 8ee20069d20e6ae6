"""Shared fixtures: real graph servers started by the tests themselves.

`store` is parametrized over every engine, so each behaviour runs on each.
Which engines: CONTROLPLANE_TEST_ENGINES (default "falkordb,neo4j,gremlin,janusgraph"). An engine
that cannot start skips on a laptop, but fails the run in CI (CI=true).

JanusGraph over Cassandra is a 30-100x slower engine (locks on every compare-and-set), so by default it
runs the suites that prove the store's guarantees (JANUSGRAPH_SUITES: conformance, supervision, jobs, the
placement property test, the lifecycle) and its own; CONTROLPLANE_JANUSGRAPH_EVERYWHERE=1 runs it in all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.ports.store import GraphStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.store_passwords import graph_url, server_config

ENGINES = [e.strip() for e in os.environ.get("CONTROLPLANE_TEST_ENGINES", "falkordb,neo4j,gremlin,janusgraph").split(",") if e.strip()]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
JANUSGRAPH_SUITES = {
    "test_store_conformance", "test_supervision", "test_jobs", "test_placement_properties", "test_lifecycle",
    "test_redelivery", "test_janusgraph_limits", "test_raw_readonly",
}
JANUSGRAPH_EVERYWHERE = os.environ.get("CONTROLPLANE_JANUSGRAPH_EVERYWHERE", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """JanusGraph runs the suites that prove the store's guarantees, unless asked to run everywhere."""
    if JANUSGRAPH_EVERYWHERE:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_janus = callspec is not None and any(isinstance(v, str) and v == "janusgraph" for v in callspec.params.values())
        (dropped if on_janus and item.path.stem not in JANUSGRAPH_SUITES else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def isolation_work_root() -> Iterator[Path]:
    """Allocations' working directories in a temporary root the agents' allocation users can pass through (0711),
    removed after the session; node agents started by tests inherit it through the environment."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="controlplane-work-"))
    root.chmod(0o711)
    before = os.environ.get("ISOLATION_WORK_ROOT")
    os.environ["ISOLATION_WORK_ROOT"] = str(root)
    yield root
    if before is None:
        os.environ.pop("ISOLATION_WORK_ROOT", None)
    else:
        os.environ["ISOLATION_WORK_ROOT"] = before
    shutil.rmtree(root, ignore_errors=True)


def _unavailable(what: str, exc: BaseException) -> None:
    if IN_CI:
        pytest.fail(f"{what} could not start in CI: {exc}", pytrace=False)
    pytest.skip(f"{what} unavailable here: {exc}")


@pytest.fixture(scope="session")
def falkordb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBServer]:
    server = FalkorDBServer(server_config(tmp_path_factory.mktemp("falkordb")))
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        _unavailable("FalkorDB", exc)
    yield server
    server.stop()


def _jvm_server(what: str, env: str, workdir: Path, start: Callable[[Path], Any], address: str) -> Iterator[str]:
    """A JVM test server (an external one when `env` names its address), failing the run in CI if it cannot start."""
    if os.environ.get(env):
        yield os.environ[env]
        return
    if shutil.which("java") is None:
        _unavailable(what, RuntimeError("no java on PATH"))
    try:
        server = start(workdir)
    except Exception as exc:  # noqa: BLE001
        _unavailable(what, exc)
    yield getattr(server, address)
    server.stop()


@pytest.fixture(scope="session")
def neo4j_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.neo4j_harness.launcher import start_neo4j

    yield from _jvm_server("Neo4j", "NEO4J_TEST_URI", Path(tmp_path_factory.mktemp("neo4j")), start_neo4j, "uri")


@pytest.fixture(scope="session")
def gremlin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.gremlin_harness.launcher import start_gremlin

    yield from _jvm_server("Gremlin Server", "GREMLIN_TEST_URL", Path(tmp_path_factory.mktemp("gremlin")), start_gremlin, "url")


@pytest.fixture(scope="session")
def janusgraph_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JanusGraph Server 1.1 over a single Cassandra 5.0 node (the ring is tests/test_janusgraph_ring.py's)."""
    from tests.janusgraph_harness.launcher import start_single

    yield from _jvm_server("JanusGraph", "JANUSGRAPH_TEST_URL", Path(tmp_path_factory.mktemp("janusgraph")), start_single, "url")


def _open_store(engine: str, request: pytest.FixtureRequest) -> GraphStore:
    if engine == "falkordb":
        from graph_schema.cypher.falkordb_store import FalkorDBStore

        server: FalkorDBServer = request.getfixturevalue("falkordb_server")
        return FalkorDBStore(graph_url(server), graph="test")
    if engine == "neo4j":
        from graph_schema.cypher.neo4j_store import Neo4jStore

        return Neo4jStore(request.getfixturevalue("neo4j_uri"))
    if engine == "gremlin":
        from graph_schema.gremlin.store import GremlinStore

        return GremlinStore(request.getfixturevalue("gremlin_url"))
    if engine == "janusgraph":
        from graph_schema.gremlin.janusgraph import JanusGraphStore

        return JanusGraphStore(request.getfixturevalue("janusgraph_url"))
    raise ValueError(f"unknown engine {engine}")


_bootstrapped: set[str] = set()


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest) -> Iterator[GraphStore]:
    """A clean, bootstrapped graph on a real server of each engine."""
    s = _open_store(request.param, request)
    if request.param not in _bootstrapped:
        s.bootstrap()
        _bootstrapped.add(request.param)
    s.clear()
    yield s
    s.close()
