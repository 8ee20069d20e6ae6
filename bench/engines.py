"""Real engines for benchmarks: the embedded FalkorDB, and Neo4j, Gremlin Server and JanusGraph from the test harnesses."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from controlplane.ports.store import GraphStore
from graph_schema.falkordb_server import FalkorDBServer
from tests.store_passwords import server_config


@contextlib.contextmanager
def falkordb_store(graph: str = "bench") -> Iterator[tuple[GraphStore, FalkorDBServer | None]]:
    from graph_schema.cypher.falkordb_store import FalkorDBStore

    with tempfile.TemporaryDirectory() as tmp:
        server = FalkorDBServer(server_config(Path(tmp))).start()  # with the users a Stack logs in as
        store = FalkorDBStore(server.url, graph=graph)
        store.bootstrap()
        try:
            yield store, server
        finally:
            store.close()
            server.stop()


@contextlib.contextmanager
def _jvm_store(start: Callable[[Path], Any], open_store: Callable[[Any], GraphStore]) -> Iterator[tuple[GraphStore, None]]:
    """A JVM test server in a temporary directory, and a bootstrapped store on it."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp))
        store = open_store(server)
        store.bootstrap()
        try:
            yield store, None
        finally:
            store.close()
            server.stop()


def neo4j_store() -> contextlib.AbstractContextManager[tuple[GraphStore, None]]:
    from graph_schema.cypher.neo4j_store import Neo4jStore
    from tests.neo4j_harness.launcher import start_neo4j

    return _jvm_store(start_neo4j, lambda server: Neo4jStore(server.uri))


def gremlin_store() -> contextlib.AbstractContextManager[tuple[GraphStore, None]]:
    from graph_schema.gremlin.store import GremlinStore
    from tests.gremlin_harness.launcher import start_gremlin

    return _jvm_store(start_gremlin, lambda server: GremlinStore(server.url))


def janusgraph_store() -> contextlib.AbstractContextManager[tuple[GraphStore, None]]:
    """JanusGraph Server 1.1 over one Cassandra 5.0 node (the test suite's single-node setup)."""
    from graph_schema.gremlin.janusgraph import JanusGraphStore
    from tests.janusgraph_harness.launcher import start_single

    return _jvm_store(start_single, lambda stack: JanusGraphStore(stack.url))


def open_engine(name: str) -> contextlib.AbstractContextManager[tuple[GraphStore, FalkorDBServer | None]]:
    engines: dict[str, Callable[[], contextlib.AbstractContextManager[tuple[GraphStore, FalkorDBServer | None]]]] = {
        "falkordb": falkordb_store, "neo4j": neo4j_store, "gremlin": gremlin_store, "janusgraph": janusgraph_store}
    return engines[name]()
