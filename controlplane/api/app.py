"""The FastAPI application: GraphQL at /graphql (GraphiQL on GET; graphql_http.py for media types), POST /query,
the graph browser, the node agents' API (/agent/v1), /healthz and /metrics.

`create_app` takes a ready ControlPlane; building the store and the dispatcher
from settings is the caller's business (the CLI, or a test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from controlplane.api.agents import AgentApi, agent_router
from controlplane.api.auth import Browsers, Guard, TrustMiddleware
from controlplane.api.browser import browser_router
from controlplane.api.context import ApiContext
from controlplane.api.health import Health, Probe, nodes_probe
from controlplane.api.metrics import ApiMetrics
from controlplane.api.raw import raw_query_router
from controlplane.api.router import AuthGraphQLRouter
from controlplane.api.schema import build_schema
from controlplane.auth import Tokens
from controlplane.services import ControlPlane

DEFAULT_MAX_DESCENDANTS = 10_000


def create_app(
    control: ControlPlane,
    *,
    tokens: Tokens | None,
    browsers: Browsers | None = None,
    health_checks: dict[str, Callable[[], None]] | None = None,
    health_probes: dict[str, Probe] | None = None,
    max_depth: int = 12,
    max_descendants: int = DEFAULT_MAX_DESCENDANTS,
    events_redis_url: str | None = None,
    runs_dir: Path | None = None,
    agents: AgentApi | None = None,
) -> FastAPI:
    """The API over `control`.

    tokens: verifies (and issues) credentials; every path but /healthz needs one. None turns
        authentication off (benchmarks comparing its cost only): say so explicitly.
    browsers: the Host names and Origins allowed (default: 127.0.0.1:8000 and localhost).
    health_checks: name -> a callable that raises when that dependency is unwell;
        None checks the graph store (`control.store.ping`), {} checks nothing.
    health_probes: name -> a callable returning the reasons the service is degraded (beside "no node is ready").
    max_depth: the deepest field nesting a GraphQL operation may have.
    max_descendants: the most allocations one `descendants` field may return.
    events_redis_url: the Redis whose doorbell (controlplane.eventbus) wakes event subscriptions;
        None: they poll the graph.
    runs_dir: where node agents on this machine write allocations' output (<data_dir>/runs), for
        `Allocation.output`; None: only what the graph kept.
    agents: the agent API (/agent/v1) node agents talk to; None: no node agent can reach this API.
    """
    checks = {"graph": control.store.ping} if health_checks is None else dict(health_checks)
    health = Health(checks, {"nodes": nodes_probe(lambda: _statuses(control)), **(health_probes or {})})
    metrics = ApiMetrics()
    schema = build_schema(max_depth=max_depth, max_descendants=max_descendants, metrics=metrics)

    guard = Guard(control, tokens, browsers or Browsers.local("127.0.0.1", 8000))

    async def context(connection: HTTPConnection) -> ApiContext:
        return ApiContext(control, max_descendants=max_descendants, events_redis_url=events_redis_url, runs_dir=runs_dir,
                          guard=guard, principal=connection.scope.get("state", {}).get("principal"))

    graphql = AuthGraphQLRouter(
        schema,
        graphql_ide="graphiql",
        context_getter=context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
    app = FastAPI(title="controlplane", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustMiddleware, guard=guard)
    app.include_router(graphql, prefix="/graphql")
    app.include_router(raw_query_router(control))
    app.include_router(browser_router(control))
    if agents is not None:
        app.include_router(agent_router(agents))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status, body = await health.report()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _statuses(control: ControlPlane) -> list[str]:
    return [n.status for n in control.queries.nodes(limit=1000)]
