"""Real engines for benchmarks: the embedded FalkorDB, and Neo4j from the test harness."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from graph_schema.falkordb_server import FalkorDBServer, FalkorDBServerConfig
from graph_schema.store import GraphStore


@contextlib.contextmanager
def falkordb_store(graph: str = "bench") -> Iterator[tuple[GraphStore, FalkorDBServer | None]]:
    from graph_schema.cypher.falkordb_store import FalkorDBStore

    with tempfile.TemporaryDirectory() as tmp:
        server = FalkorDBServer(FalkorDBServerConfig(data_dir=Path(tmp))).start()
        store = FalkorDBStore(server.url, graph=graph)
        store.bootstrap()
        try:
            yield store, server
        finally:
            store.close()
            server.stop()


@contextlib.contextmanager
def neo4j_store() -> Iterator[tuple[GraphStore, None]]:
    from graph_schema.cypher.neo4j_store import Neo4jStore
    from tests.neo4j_harness.launcher import start_neo4j

    with tempfile.TemporaryDirectory() as tmp:
        server = start_neo4j(Path(tmp))
        store = Neo4jStore(server.uri)
        store.bootstrap()
        try:
            yield store, None
        finally:
            store.close()
            server.stop()


@contextlib.contextmanager
def gremlin_store() -> Iterator[tuple[GraphStore, None]]:
    from graph_schema.gremlin.store import GremlinStore
    from tests.gremlin_harness.launcher import start_gremlin

    with tempfile.TemporaryDirectory() as tmp:
        server = start_gremlin(Path(tmp))
        store = GremlinStore(server.url)
        store.bootstrap()
        try:
            yield store, None
        finally:
            store.close()
            server.stop()


def open_engine(name: str):  # type: ignore[no-untyped-def]
    return {"falkordb": falkordb_store, "neo4j": neo4j_store, "gremlin": gremlin_store}[name]()
