"""One Gremlin Server connection: submit a bytecode traversal, retry optimistic conflicts, map results.

Why this exists apart from the store: TinkerTransactionGraph (and JanusGraph, Neptune)
detect write-write conflicts at commit and answer with an error instead of waiting on
a lock as Neo4j does. Every mutation of the store is one idempotent traversal whose
precondition is re-read when it runs, so the right answer to a conflict is to run the
same traversal again; that policy, and turning driver errors into the control plane's
errors, live here once.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Callable
from typing import Any

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource
from gremlin_python.process.traversal import T
from gremlin_python.statics import long

from controlplane.domain.errors import Unavailable

#: what TinkerTransactionGraph says when another transaction committed an element first, and
#: what addV says when a concurrent create of the same id committed between our read and our write
_RETRYABLE = ("Conflict: element modified in another transaction", "with id already exists")
_INT32 = range(-(2**31), 2**31)


class _DropConflictLogs(logging.Filter):
    """gremlinpython logs every error answer at ERROR; a conflict we retry is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in record.getMessage() for m in _RETRYABLE)


_FILTER = _DropConflictLogs()


def value(v: Any) -> Any:
    """A Python value as a traversal argument: ints beyond 32 bits travel as Long (GraphBinary)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if v in _INT32 else long(v)
    if isinstance(v, (list, tuple)):
        return [value(x) for x in v]
    if isinstance(v, dict):
        return {k: value(x) for k, x in v.items()}
    return v


def split_element(m: dict[Any, Any]) -> tuple[str, dict[str, Any]]:
    """An elementMap() answer as (label, properties): the same dict the Cypher engines return."""
    props = {k: v for k, v in m.items() if isinstance(k, str)}
    return str(m.get(T.label, "")), props


def props_of(m: dict[Any, Any]) -> dict[str, Any]:
    return split_element(m)[1]


class Remote:
    """A pooled connection to the traversal source `g` of one Gremlin Server."""

    def __init__(
        self, url: str, *, traversal_source: str = "g", pool_size: int = 8, retry_for_s: float = 30.0,
        answer_timeout_s: float = 180.0,
    ) -> None:
        logging.getLogger("gremlinpython").addFilter(_FILTER)
        self.url = url
        self._retry_for_s = retry_for_s
        self._answer_timeout_s = answer_timeout_s
        try:
            self._conn = DriverRemoteConnection(
                url, traversal_source, pool_size=pool_size, max_content_length=64 * 1024 * 1024
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the same to the caller
            raise Unavailable(f"Gremlin Server at {url} is unreachable: {exc}") from exc
        self.g: GraphTraversalSource = traversal().with_remote(self._conn)

    def run(self, build: Callable[[GraphTraversalSource], GraphTraversal], *, write: bool = True) -> list[Any]:
        """Build the traversal and iterate it to a list; rerun it when it lost an optimistic conflict.

        `build` is called again for each attempt (a submitted traversal cannot be resubmitted).
        """
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.002
        while True:
            try:
                return self._submit(build(self.g))
            except GremlinServerError as exc:
                if not (write and _is_retryable(exc)) or time.monotonic() > deadline:
                    raise
            except Exception as exc:
                # aiohttp's client errors are not all OSErrors
                if isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith("aiohttp"):
                    raise Unavailable(f"Gremlin Server at {self.url} is unreachable: {exc}") from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def _submit(self, t: GraphTraversal) -> list[Any]:
        """Send the bytecode; wait for the answer at most answer_timeout_s (the server stops a traversal sooner)."""
        try:
            remote = self._conn.submit_async(t.bytecode).result(timeout=self._answer_timeout_s)
        except FutureTimeout:
            raise Unavailable(f"Gremlin Server at {self.url} did not answer within {self._answer_timeout_s:g}s") from None
        out: list[Any] = []
        for traverser in remote.traversers:
            out.extend([traverser.object] * max(1, int(traverser.bulk)))
        return out

    def one(self, build: Callable[[GraphTraversalSource], GraphTraversal], *, write: bool = True) -> Any:
        rows = self.run(build, write=write)
        return rows[0] if rows else None

    def close(self) -> None:
        self._conn.close()


def _is_retryable(exc: GremlinServerError) -> bool:
    return any(m in str(exc) for m in _RETRYABLE)
