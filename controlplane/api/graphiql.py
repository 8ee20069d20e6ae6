"""GraphiQL at GET /graphql that works without internet.

Strawberry's own GraphiQL page loads React, GraphiQL and its explorer plugin from
unpkg.com, so on a machine without internet the page stays at "Loading...". This
router is strawberry's, with only the page replaced: the same GraphiQL (pinned,
from the package's static/vendor, see scripts/refresh-browser-assets.sh) served by
the API itself, and a bearer token from the graph browser's session sent along.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

from controlplane.api.graphql_http import GraphQLHTTPRouter

PAGE = Path(__file__).resolve().parent / "static" / "graphiql" / "index.html"


class OfflineGraphQLRouter(GraphQLHTTPRouter):
    """The GraphQL-over-HTTP router whose IDE page loads nothing from outside the API."""

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})
