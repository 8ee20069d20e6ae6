"""An operator's raw read-only Gremlin query (`g.V().hasLabel('Node')...`), for graph browsers and scripts.

The text is never parsed nor patched here: it goes to the server's gremlin-lang engine
(TinkerPop's own Gremlin grammar, no Groovy, no code), with `g` aliased to the server's
read-only traversal source `g_ro` (ReadOnlyStrategy), so the engine itself refuses any
write. The server stops it past the time limit (evaluationTimeout). Each result is one
row of one column, `result`; elements come back in the engines' common shape (graph_schema.raw_elements).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.traversal import Direction, T
from gremlin_python.structure.graph import Edge, Path, Vertex, VertexProperty

from controlplane.domain.errors import InvalidInput, QueryTimeout, Unavailable
from controlplane.domain.records import RawResult
from graph_schema import raw_elements

if TYPE_CHECKING:
    from graph_schema.gremlin.remote import Remote

READ_ONLY_SOURCE = "g_ro"


def browse(v: Any) -> Any:
    """A result as JSON-friendly values."""
    if isinstance(v, Vertex):
        return raw_elements.vertex(v.id, [v.label], {p.key: browse(p.value) for p in (v.properties or [])})
    if isinstance(v, Edge):
        return raw_elements.edge(v.id, v.label, v.outV.id, v.inV.id, {p.key: browse(p.value) for p in (v.properties or [])})
    if isinstance(v, VertexProperty):
        return {"key": v.key, "value": browse(v.value)}
    if isinstance(v, Path):
        objects = [browse(x) for x in v.objects]
        if not all(isinstance(o, dict) and o.get(raw_elements.ELEMENT) in ("vertex", "edge") for o in objects):
            return objects  # a path of values (path().by('name')): no graph to draw
        return raw_elements.path([o for o in objects if o[raw_elements.ELEMENT] == "vertex"],
                                 [o for o in objects if o[raw_elements.ELEMENT] == "edge"])
    if isinstance(v, dict):
        return {_key(k): browse(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [browse(x) for x in v]
    if isinstance(v, (T, Direction)):
        return v.name
    return v


def _key(k: Any) -> Any:
    if isinstance(k, (T, Direction)):
        return k.name
    return k if isinstance(k, (str, int, float, bool)) else str(k)


class RawQueryMixin:
    _remote: Remote
    engine: str

    def _raw_client(self) -> Client:
        """A one-connection client of the read-only source (an engine may pick its serializer)."""
        return self._remote.client(READ_ONLY_SOURCE)

    def raw_query(self, *, text: str, timeout_s: float, limit: int) -> RawResult:
        started = time.perf_counter()
        client = self._raw_client()
        try:
            options = {"language": "gremlin-lang", "evaluationTimeout": max(1, int(timeout_s * 1000))}
            results = client.submit(text, request_options=options).all().result()
        except GremlinServerError as exc:
            raise _refusal(exc, timeout_s) from None
        except Exception as exc:  # noqa: BLE001 - connection-level failures
            if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith("aiohttp"):
                raise Unavailable(f"Gremlin Server at {self._remote.url} is unreachable: {exc}") from exc
            raise
        finally:
            client.close()
        return RawResult(
            engine=self.engine, language="gremlin", columns=("result",),
            rows=tuple((browse(r),) for r in results[:limit]), truncated=len(results) > limit,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )


def _refusal(exc: GremlinServerError, timeout_s: float) -> Exception:
    message = str(exc)
    lowered = message.lower()
    if getattr(exc, "status_code", None) == 598 or "timeout" in lowered:
        return QueryTimeout(f"stopped after {timeout_s:g}s", field="query")
    if "readonlystrategy" in lowered or "mutating step" in lowered or "read only" in lowered:
        return InvalidInput(f"read-only: this endpoint never writes ({message})", field="query")
    return InvalidInput(message, field="query")
