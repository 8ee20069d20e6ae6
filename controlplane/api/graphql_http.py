"""GraphQL over HTTP as the spec says: the response media type chosen by Accept, and its status codes.

https://graphql.github.io/graphql-over-http/draft/ — strawberry's FastAPI
router (0.341) knows one response type, `application/json`, answered with 200
whatever happened (or a plain-text 400 for a request it cannot read), and a
mutation over GET is a 400. This router negotiates on `Accept`:

- `application/graphql-response+json`, the spec's preferred type: a request
  error (the document does not parse or validate, the variables do not coerce)
  has no `data` entry and answers 400 (500 if the server failed before
  executing); once execution has begun the answer is 200, field errors and
  all (a partial response, even with `data: null`);
- `application/json`, for legacy clients, as before: 200 for every
  well-formed request, the errors in the body.

Which one: the media range with the highest q decides; at equal q a type named
exactly beats a wildcard, and graphql-response+json beats json when both are
named. `*/*` alone (curl, httpx, browsers) gets application/json, what such
clients have always had. No Accept header at all gets graphql-response+json,
the spec's rule since 2025-01-01. An Accept that allows neither is refused with
406 before anything runs. A request that is not well-formed GraphQL over HTTP
(not JSON, no query, variables not an object) is a 400 under both types, with a
GraphQL error body under graphql-response+json; a mutation over GET is a 405
with `Allow: POST`, as the spec requires.
"""

from __future__ import annotations

import json
from typing import Any, overload

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.typevars import RootValue
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from controlplane.api.context import ApiContext
from controlplane.api.errors import INTERNAL, INVALID_QUERY

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
MEDIA_TYPES = (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)  # in the order a tie goes
NOT_ACCEPTABLE = f"this endpoint answers {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}; the Accept header allows neither"
_MEDIA = "graphql_media_type"
_STATUS = "graphql_status"


def negotiate(accept: str | None) -> str | None:
    """The media type to answer a request with this Accept header in, or None when it accepts neither."""
    if accept is None or not accept.strip():
        return GRAPHQL_RESPONSE_JSON
    ranges = [_media_range(part) for part in accept.split(",") if part.strip()]
    best: tuple[float, int, bool] | None = None
    chosen: str | None = None
    for media_type in MEDIA_TYPES:
        matches = [(specificity, q) for pattern, q in ranges if (specificity := _matches(pattern, media_type)) >= 0]
        if not matches:
            continue
        specificity, q = max(matches)  # the most specific range that matches gives the q
        rank = (q, specificity, media_type == GRAPHQL_RESPONSE_JSON and specificity == 2)
        if q > 0 and (best is None or rank > best):
            best, chosen = rank, media_type
    return chosen


def _media_range(part: str) -> tuple[str, float]:
    media_range, *params = (p.strip() for p in part.split(";"))
    q = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = min(1.0, max(0.0, float(value.strip())))
            except ValueError:
                q = 0.0
    return media_range.lower(), q


def _matches(pattern: str, media_type: str) -> int:
    """How specifically `pattern` matches `media_type`: 2 exactly, 1 type/*, 0 */*, -1 not at all."""
    if pattern == media_type:
        return 2
    if pattern == media_type.split("/")[0] + "/*":
        return 1
    return 0 if pattern == "*/*" else -1


def is_request_error(result: ExecutionResult) -> bool:
    """Refused before execution (parse, validation, variable coercion): no data, and no error belongs to a field."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(e.path is None for e in errors)


class GraphQLHTTPRouter(GraphQLRouter[ApiContext, RootValue]):
    """strawberry's router, answering each request in the media type its Accept header asks for."""

    @overload
    async def run(self, request: Request, context: ApiContext = UNSET, root_value: RootValue | None = UNSET) -> Response: ...

    @overload
    async def run(self, request: WebSocket, context: ApiContext = UNSET, root_value: RootValue | None = UNSET) -> WebSocket: ...

    async def run(
        self, request: Request | WebSocket, context: ApiContext = UNSET, root_value: RootValue | None = UNSET
    ) -> Response | WebSocket:
        if isinstance(request, WebSocket) or self.should_render_graphql_ide(self.request_adapter_class(request)):
            return await super().run(request, context=context, root_value=root_value)
        media_type = negotiate(request.headers.get("accept"))
        if media_type is None:
            return PlainTextResponse(NOT_ACCEPTABLE, status_code=406)
        setattr(request.state, _MEDIA, media_type)
        try:
            response = await super().run(request, context=context, root_value=root_value)
        except HTTPException as exc:
            return _refusal(exc, media_type)
        if media_type == GRAPHQL_RESPONSE_JSON:
            response.status_code = getattr(request.state, _STATUS, response.status_code)
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
        return response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        answer = await super().process_result(request, result)
        if getattr(request.state, _MEDIA, None) == GRAPHQL_RESPONSE_JSON and is_request_error(result):
            answer.pop("data", None)  # a request error has no data entry (GraphQL spec, "Response")
            internal = any((e.extensions or {}).get("code") == INTERNAL for e in result.errors or ())
            setattr(request.state, _STATUS, 500 if internal else 400)
        return answer

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):  # e.g. a mutation over GET: 405, not 400
                raise HTTPException(405, exc.reason) from exc.__cause__
            raise


def _refusal(exc: HTTPException, media_type: str) -> Response:
    """A request strawberry could not take (not JSON, no query, wrong method), in the negotiated media type."""
    headers = {"allow": "POST"} if exc.status_code == 405 else None
    if media_type != GRAPHQL_RESPONSE_JSON:
        return PlainTextResponse(exc.reason, status_code=exc.status_code, headers=headers)
    body = {"errors": [{"message": exc.reason, "extensions": {"code": INVALID_QUERY, "field": None}}]}
    return Response(json.dumps(body), status_code=exc.status_code, headers=headers,
                    media_type=f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8")
