"""The FastAPI application: GraphQL at /graphql (GraphiQL on GET), POST /query, /healthz and /metrics.

`create_app` takes a ready ControlPlane; building the store and the dispatcher
from settings is the caller's business (the CLI, or a test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from controlplane.api.auth import AuthGraphQLRouter, Browsers, Guard, TrustMiddleware
from controlplane.api.context import ApiContext
from controlplane.api.metrics import ApiMetrics
from controlplane.api.raw import raw_query_router
from controlplane.api.schema import build_schema
from controlplane.auth import Tokens
from controlplane.services import ControlPlane

HEALTH_CHECK_TIMEOUT_S = 5.0
DEFAULT_MAX_DESCENDANTS = 10_000


def create_app(
    control: ControlPlane,
    *,
    tokens: Tokens | None,
    browsers: Browsers | None = None,
    health_checks: dict[str, Callable[[], None]] | None = None,
    max_depth: int = 12,
    max_descendants: int = DEFAULT_MAX_DESCENDANTS,
    events_redis_url: str | None = None,
) -> FastAPI:
    """The API over `control`.

    tokens: verifies (and issues) credentials; every path but /healthz needs one. None turns
        authentication off (benchmarks comparing its cost only): say so explicitly.
    browsers: the Host names and Origins allowed (default: 127.0.0.1:8000 and localhost).
    health_checks: name -> a callable that raises when that dependency is unwell;
        None checks the graph store (`control.store.ping`), {} checks nothing.
    max_depth: the deepest field nesting a GraphQL operation may have.
    max_descendants: the most allocations one `descendants` field may return.
    events_redis_url: the Redis whose doorbell (controlplane.eventbus) wakes event subscriptions;
        None: they poll the graph.
    """
    checks = {"graph": control.store.ping} if health_checks is None else dict(health_checks)
    metrics = ApiMetrics()
    schema = build_schema(max_depth=max_depth, max_descendants=max_descendants, metrics=metrics)

    guard = Guard(control, tokens, browsers or Browsers.local("127.0.0.1", 8000))

    async def context(connection: HTTPConnection) -> ApiContext:
        return ApiContext(control, max_descendants=max_descendants, events_redis_url=events_redis_url, guard=guard,
                          principal=connection.scope.get("state", {}).get("principal"))

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

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        results = dict(zip(checks, await asyncio.gather(*(_run_check(c) for c in checks.values())), strict=True))
        healthy = all(r == "ok" for r in results.values())
        return JSONResponse(
            {"status": "ok" if healthy else "failing", "checks": results}, status_code=200 if healthy else 503
        )

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


async def _run_check(check: Callable[[], None]) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(check), HEALTH_CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {HEALTH_CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not an error of ours
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "ok"
