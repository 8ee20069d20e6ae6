"""The graph browser at /browser: static pages shipped inside the package, served by the API itself.

Operators look at the hierarchy on every engine and in the embedded default, where
no engine browser exists (Neo4j Browser only comes with the compose deployment,
FalkorDB's is a separate server, Gremlin Server has none). The page is plain files
(controlplane/api/static/browser, with pinned libraries in static/vendor, refreshed
by scripts/refresh-browser-assets.sh): no CDN, no Node server. It talks to the same
API as any client: `rawQuery` in the engine's own language, `traverse`, the
mutations, and the `events` subscription. This module only serves the files and
tells the page which engine (so which query language) it is looking at.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from controlplane.api.raw import DEFAULT_LIMIT, DEFAULT_TIMEOUT_S
from controlplane.services import ControlPlane
from controlplane.services.queries import RAW_QUERY_MAX_ROWS

STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "browser" / "index.html"
#: the engine's own query language, as the raw-query path speaks it
LANGUAGE = {"falkordb": "cypher", "neo4j": "cypher", "gremlin": "gremlin"}


def browser_router(control: ControlPlane) -> APIRouter:
    """GET /browser (the page), /browser/config.json (engine and limits), /browser/static/... (its files)."""
    router = APIRouter(include_in_schema=False)
    files = StaticFiles(directory=STATIC)

    @router.get("/browser")
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html", headers={"cache-control": "no-cache"})

    @router.get("/browser/")
    async def page_slash(request: Request) -> RedirectResponse:
        target = "/browser" + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(target, status_code=308)

    @router.get("/browser/config.json")
    async def config() -> JSONResponse:
        engine = control.store.engine
        return JSONResponse({
            "engine": engine,
            "language": LANGUAGE.get(engine, "cypher"),
            "serverTime": time.time(),
            "rawQuery": {"defaultLimit": DEFAULT_LIMIT, "maxLimit": RAW_QUERY_MAX_ROWS, "timeoutS": DEFAULT_TIMEOUT_S},
        })

    @router.api_route("/browser/static/{path:path}", methods=["GET", "HEAD"])
    async def static(path: str, request: Request) -> Response:
        return await files.get_response(path, request.scope)

    return router
