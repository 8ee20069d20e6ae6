"""Build the adapters a process needs from Settings: the graph store for the chosen engine."""

from __future__ import annotations

from collections.abc import Callable

from controlplane.domain.errors import InvalidInput
from controlplane.settings import Settings
from graph_schema.store import GraphStore


def open_store(settings: Settings, *, graph_uri: str | None = None) -> GraphStore:
    uri = graph_uri or settings.graph_uri
    if settings.graph_backend == "falkordb":
        from graph_schema.cypher.falkordb_store import FalkorDBStore

        if not uri:
            raise InvalidInput("no FalkorDB address: start the embedded server (controlplane up) or set it", field="GRAPH_URI")
        return FalkorDBStore(uri, graph=settings.graph_name)
    if settings.graph_backend == "neo4j":
        from graph_schema.cypher.neo4j_store import Neo4jStore

        if not uri:
            raise InvalidInput("set the Neo4j address, e.g. bolt://localhost:7687", field="GRAPH_URI")
        return Neo4jStore(uri, user=settings.graph_user, password=settings.graph_password)
    if settings.graph_backend == "gremlin":
        from graph_schema.gremlin.store import GremlinStore

        if not uri:
            raise InvalidInput("set the Gremlin Server address, e.g. ws://localhost:8182/gremlin", field="GRAPH_URI")
        return GremlinStore(uri)
    if settings.graph_backend == "janusgraph":
        from graph_schema.gremlin.janusgraph import JanusGraphStore

        if not uri:
            raise InvalidInput("set the JanusGraph Server address(es), e.g. ws://jg1:8182/gremlin,ws://jg2:8182/gremlin",
                               field="GRAPH_URI")
        return JanusGraphStore(uri)
    raise InvalidInput(f"unknown graph engine {settings.graph_backend!r}", field="GRAPH_BACKEND")


def health_checks(store: GraphStore, broker_url: str) -> dict[str, Callable[[], None]]:
    """What /healthz checks: the graph answers a query, and the broker answers PING."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from controlplane.redis_urls import sync_client

    broker = sync_client(broker_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def check_broker() -> None:
        broker.ping()

    return {"graph": store.ping, "redis": check_broker}
