"""The assembly point: the adapters a process needs, opened from Settings, and the control plane built over them.

Every process (API, node agent, supervisor, scheduler, CLI) gets its
ControlPlane from `control_plane()`; tests and benchmarks build one over a
store of their own with `assemble()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import InvalidInput
from controlplane.jobs.ports import JobStore
from controlplane.ports.dispatch import Dispatcher
from controlplane.ports.leases import NodeLeases
from controlplane.ports.store import GraphStore
from controlplane.services import ControlPlane, build
from controlplane.services.queries import QueryGate
from controlplane.settings import Settings

if TYPE_CHECKING:
    from controlplane.api.agents import AgentApi
    from controlplane.auth import Tokens
    from graph_schema.gremlin.remote import Access


def open_store(settings: Settings, *, graph_uri: str | None = None, reader: bool = False) -> GraphStore:
    """`reader`: a store for user-facing reads, on connections of its own, whose reads the engine stops after
    `query_timeout_s` (so the control plane's own writes never queue for a connection behind them)."""
    from controlplane.redis_urls import with_tls

    uri = graph_uri or settings.graph_uri
    timeout_s = settings.query_timeout_s if reader else None
    if settings.graph_backend == "falkordb":
        from graph_schema.cypher.falkordb_store import FalkorDBStore

        if not uri:
            raise InvalidInput("no FalkorDB address: start the embedded server (controlplane up) or set it", field="GRAPH_URI")
        uri = with_tls(uri, ca_file=settings.graph_tls_ca_file, cert_file=settings.graph_tls_cert_file,
                       key_file=settings.graph_tls_key_file, field="GRAPH_URI")
        return FalkorDBStore(uri, graph=settings.graph_name, read_timeout_ms=int(timeout_s * 1000) if timeout_s else None)
    if settings.graph_backend == "neo4j":
        from graph_schema.cypher.neo4j_store import Neo4jStore

        if not uri:
            raise InvalidInput("set the Neo4j address, e.g. bolt://localhost:7687", field="GRAPH_URI")
        return Neo4jStore(uri, user=settings.graph_user, password=settings.graph_password, read_timeout_s=timeout_s,
                          tls_ca_file=settings.graph_tls_ca_file)
    if settings.graph_backend == "gremlin":
        from graph_schema.gremlin.store import GremlinStore

        if not uri:
            raise InvalidInput("set the Gremlin Server address, e.g. ws://localhost:8182/gremlin", field="GRAPH_URI")
        return GremlinStore(uri, read_timeout_s=timeout_s, access=gremlin_access(settings))
    if settings.graph_backend == "janusgraph":
        from graph_schema.gremlin.janusgraph import JanusGraphStore

        if not uri:
            raise InvalidInput("set the JanusGraph Server address(es), e.g. ws://jg1:8182/gremlin,ws://jg2:8182/gremlin",
                               field="GRAPH_URI")
        return JanusGraphStore(uri, read_timeout_s=timeout_s, access=gremlin_access(settings))
    raise InvalidInput(f"unknown graph engine {settings.graph_backend!r}", field="GRAPH_BACKEND")


def gremlin_access(settings: Settings) -> Access:
    """A Gremlin or JanusGraph Server's user and password, and the certificates of wss://, from the settings."""
    from graph_schema.gremlin.remote import Access

    return Access(user=settings.graph_user, password=settings.graph_password, tls_ca_file=settings.graph_tls_ca_file,
                  tls_cert_file=settings.graph_tls_cert_file, tls_key_file=settings.graph_tls_key_file)


def broker_address(settings: Settings, url: str) -> str:
    """REDIS_URL as every client uses it: over rediss://, with the certificates of the settings to trust and show."""
    from controlplane.redis_urls import with_tls

    return with_tls(url, ca_file=settings.redis_tls_ca_file, cert_file=settings.redis_tls_cert_file,
                    key_file=settings.redis_tls_key_file)


def job_store(store: GraphStore) -> JobStore:
    """The job store over the same engine connection as `store`."""
    from graph_schema.cypher.base import CypherStore

    if isinstance(store, CypherStore):
        from controlplane.jobs.cypher import CypherJobStore

        return CypherJobStore(store)
    from graph_schema.gremlin.store import GremlinStore

    if isinstance(store, GremlinStore):
        from controlplane.jobs.gremlin import GremlinJobStore

        return GremlinJobStore(store.remote)
    raise InvalidInput(f"no job store for the {store.engine} engine", field="GRAPH_BACKEND")


def assemble(
    store: GraphStore,
    dispatcher: Dispatcher | None = None,
    *,
    clock: Callable[[], float] = wall_clock,
    notify: Callable[[], None] | None = None,
    leases: NodeLeases | None = None,
) -> ControlPlane:
    """The control plane over an open store (`dispatcher` None: supervision in this process, no agents)."""
    return build(store, job_store(store), dispatcher, clock=clock, notify=notify, leases=leases)


def control_plane(
    settings: Settings, *, graph_uri: str | None, broker_url: str, bootstrap: bool = True, readers: bool = False,
) -> ControlPlane:
    """What a process of the product holds: the store, Celery as the dispatcher, the Redis doorbell and leases.

    `readers`: user-facing reads get a store of their own with the engine-side time limit and a gate (the API)."""
    from controlplane.eventbus import RedisNotifier
    from controlplane.redis_leases import RedisLeases

    store = open_store(settings, graph_uri=graph_uri)
    if bootstrap:
        store.bootstrap()
    return build(
        store, job_store(store), dispatcher(broker_url), notify=RedisNotifier(broker_url).notify,
        leases=RedisLeases(broker_url), reader=open_store(settings, graph_uri=graph_uri, reader=True) if readers else None,
        gate=QueryGate(settings.max_concurrent_queries, wait_s=settings.query_wait_s),
    )


def dispatcher(broker_url: str) -> Dispatcher:
    """Celery for the supervisors, the nodes' work lists in Redis for the node agents."""
    from controlplane.redis_agents import RedisWork
    from workers.app import configure
    from workers.dispatch import CeleryDispatcher

    return CeleryDispatcher(configure(broker_url), RedisWork(broker_url))


def agent_api(control: ControlPlane, settings: Settings, broker_url: str, tokens: Tokens) -> AgentApi:
    """The agent API over the control plane: node-restricted reports, sessions and work lists in Redis, and the keys
    that sign node credentials and the tokens of the allocations agents claim."""
    from controlplane.api.agents import AgentApi
    from controlplane.auth.bootstrap import allocation_token
    from controlplane.eventbus import RedisNotifier
    from controlplane.redis_agents import RedisSessions, RedisWork, lease_keep_s
    from controlplane.services.agents import AgentService

    def issue(allocation_id: str, incarnation: int) -> str:
        return allocation_token(tokens, allocation_id, incarnation, ttl_s=settings.allocation_token_ttl_s)

    service = AgentService(control.store, control.dispatcher, issue_token=issue if tokens.can_sign else None,
                           notify=RedisNotifier(broker_url).notify, clock=control.clock)
    sessions = RedisSessions(broker_url, lease_keep_s=lease_keep_s(settings.node_grace_s))
    return AgentApi(service=service, sessions=sessions, work=RedisWork(broker_url), joins=sessions, tokens=tokens,
                    session_ttl_s=settings.node_grace_s, node_token_ttl_s=settings.node_token_ttl_s)


def health_checks(store: GraphStore, broker_url: str) -> dict[str, Callable[[], None]]:
    """What /healthz checks: the graph answers a query, and the broker answers PING."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from controlplane.redis_urls import sync_client

    broker = sync_client(broker_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def check_broker() -> None:
        broker.ping()

    return {"graph": store.ping, "redis": check_broker}
