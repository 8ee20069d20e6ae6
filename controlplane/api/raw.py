"""Raw read-only queries in the engine's own language, for graph browsers and scripts: GraphQL and POST /query.

The engine refuses writes (read-only execution) and stops a query past its time
limit; this module only carries the question and the answer. Values the engine
returns that JSON cannot carry (temporal types, NaN) are sent as text.
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import strawberry
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from strawberry import Parent
from strawberry.scalars import JSON

from controlplane.api.errors import INTERNAL, INTERNAL_MESSAGE
from controlplane.domain.errors import ControlPlaneError, ErrorCode, InvalidInput
from controlplane.domain.records import RawResult as RawResultRecord
from controlplane.services import ControlPlane

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LIMIT = 1000
STATUS = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TIMEOUT: 408,
    ErrorCode.CONFLICT: 409,
    ErrorCode.NO_CAPACITY: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BUSY: 429,
}


@strawberry.type(name="RawResult", description="The answer of a read-only query in the engine's own language.")
class RawResult:
    engine: str = strawberry.field(description="`falkordb`, `neo4j` or `gremlin`.")
    language: str = strawberry.field(description="`cypher` or `gremlin`.")
    columns: list[str]
    truncated: bool = strawberry.field(description="More rows matched than `limit`; only the first ones are here.")
    elapsed_ms: float

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, RawResultRecord))

    @strawberry.field(description="One list of values per row, in the order of `columns`; vertices and edges as objects.")
    def rows(self, root: Parent[RawResultRecord]) -> JSON:
        return cast(JSON, as_json(root.rows))


def as_json(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return str(value)


def raw_query_router(control: ControlPlane) -> APIRouter:
    """POST /query {"query", "timeoutS"?, "limit"?}: the RawResult as JSON, or 4xx/5xx {"code", "field", "message"}."""
    router = APIRouter()

    @router.post("/query")
    async def raw_query(request: Request) -> JSONResponse:
        try:
            query, timeout_s, limit = _arguments(await _body(request))
            result = await run_in_threadpool(control.queries.raw_query, query, timeout_s=timeout_s, limit=limit)
        except ControlPlaneError as exc:
            message = f"{exc.field}: {exc.message}" if exc.field else exc.message
            return JSONResponse(
                {"code": exc.code.value, "field": exc.field, "message": message}, status_code=STATUS.get(exc.code, 400)
            )
        except Exception:  # a bug: the client gets no details, the log gets the traceback
            log.exception("POST /query failed")
            return JSONResponse({"code": INTERNAL, "field": None, "message": INTERNAL_MESSAGE}, status_code=500)
        return JSONResponse({
            "engine": result.engine, "language": result.language, "columns": list(result.columns),
            "rows": as_json(result.rows), "truncated": result.truncated, "elapsedMs": result.elapsed_ms,
        })

    return router


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput('the body must be a JSON object like {"query": "MATCH (n) RETURN n LIMIT 5"}') from None
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object like {"query": "MATCH (n) RETURN n LIMIT 5"}')
    return body


def _arguments(body: dict[str, Any]) -> tuple[str, float, int]:
    unknown = sorted(set(body) - {"query", "timeoutS", "limit"})
    if unknown:
        raise InvalidInput("unknown field; the body takes query, timeoutS and limit", field=unknown[0])
    query = body.get("query")
    if not isinstance(query, str):
        raise InvalidInput("give the query text as a string", field="query")
    timeout_s = body.get("timeoutS", DEFAULT_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise InvalidInput("must be a number of seconds", field="timeoutS")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInput("must be an integer", field="limit")
    return query, float(timeout_s), limit
