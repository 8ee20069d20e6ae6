"""FalkorDB over RESP (the `falkordb` client): the embedded default engine.

FalkorDB runs each query alone and atomically, so the one-statement rule of
the store gives serializable check-and-set here. Dialect differences from
Neo4j are kept to the schema bootstrap (GRAPH.CONSTRAINT instead of
CREATE CONSTRAINT) and the lock marker. (FalkorDB 4.16's toJSON() does not
escape quotes inside strings, so results are never shipped as JSON text.)
"""

from __future__ import annotations

import time
from typing import Any

import redis
from falkordb import FalkorDB
from falkordb.edge import Edge
from falkordb.node import Node as FNode
from falkordb.path import Path

from controlplane.domain.errors import InvalidInput, QueryTimeout, Unavailable
from controlplane.domain.records import RawResult
from graph_schema import raw_elements
from graph_schema.cypher.base import CypherStore, Row

_UNIQUE = ("Actor", "Node", "Allocation", "Gpu", "Event", "Job", "Task")
_RANGE = (
    ("Allocation", "state"), ("Allocation", "node_id"), ("Allocation", "parent_id"), ("Allocation", "updated_at"),
    ("Node", "status"), ("Node", "cpu_free"), ("Event", "allocation_id"), ("Event", "at"), ("Task", "job_id"),
    ("Job", "state"),
)


def _browse(value: Any) -> Any:
    """A result value as plain data for a browser: vertices and edges with their labels."""
    if isinstance(value, FNode):
        return raw_elements.vertex(value.id, value.labels, value.properties)
    if isinstance(value, Edge):
        return raw_elements.edge(value.id, value.relation, getattr(value.src_node, "id", value.src_node),
                                 getattr(value.dest_node, "id", value.dest_node), value.properties)
    if isinstance(value, Path):
        return raw_elements.path([_browse(n) for n in value.nodes()], [_browse(e) for e in value.edges()])
    if isinstance(value, dict):
        return {k: _browse(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_browse(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (FNode, Edge)):
        return dict(value.properties)
    if isinstance(value, dict):
        return dict(value)
    return value


class FalkorDBStore(CypherStore):
    engine = "falkordb"
    #: every query runs alone and atomically: no lock to take, the marker is dropped
    lock_clause = ""

    def __init__(
        self, url: str, *, graph: str = "controlplane", timeout_ms: int = 30_000, read_timeout_ms: int | None = None,
    ) -> None:
        """`read_timeout_ms`: read queries are stopped by FalkorDB itself after this long (default `timeout_ms`)."""
        super().__init__()
        self._pool = redis.ConnectionPool.from_url(url, max_connections=64, decode_responses=True)
        try:  # the client asks the server what it is (a Sentinel? a cluster?) at once
            self._db = FalkorDB(connection_pool=self._pool)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(f"FalkorDB is unreachable: {exc}") from exc
        self._graph = self._db.select_graph(graph)
        self._graph_name = graph
        self._timeout_ms = timeout_ms
        self._read_timeout_ms = read_timeout_ms or timeout_ms

    def _run(self, ro: bool, query: str, params: dict[str, Any]) -> list[Row]:
        timeout = self._read_timeout_ms if ro else self._timeout_ms
        try:
            fn = self._graph.ro_query if ro else self._graph.query
            result = fn(self._dialect(query), params, timeout=timeout)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(f"FalkorDB is unreachable: {exc}") from exc
        except redis.ResponseError as exc:
            message = str(exc)
            if "unique constraint violation" in message:
                return []  # nothing written (the query is atomic): the caller reads back what exists
            if ro and "timed out" in message.lower():
                raise QueryTimeout(f"stopped after {timeout / 1000:g}s", field="query") from None
            if "mem consumption exceeded" in message.lower():
                raise InvalidInput(f"the query used more memory than the engine allows one query ({message})",
                                   field="query") from None
            raise
        return [[_plain(v) for v in row] for row in result.result_set]

    def _read(self, query: str, params: dict[str, Any]) -> list[Row]:
        return self._run(True, query, params)

    def _write(self, query: str, params: dict[str, Any]) -> list[Row]:
        return self._run(False, query, params)

    def raw_query(self, *, text: str, timeout_s: float, limit: int) -> RawResult:
        started = time.perf_counter()
        try:
            self._refuse_load_csv(text)
            result = self._graph.ro_query(text, timeout=max(1, int(timeout_s * 1000)))
        except redis.TimeoutError:
            raise QueryTimeout(f"stopped after {timeout_s:g}s", field="query") from None
        except redis.ConnectionError as exc:
            raise Unavailable(f"FalkorDB is unreachable: {exc}") from exc
        except redis.ResponseError as exc:
            message = str(exc)
            lowered = message.lower()
            if "timed out" in lowered or "timeout" in lowered:
                raise QueryTimeout(f"stopped after {timeout_s:g}s", field="query") from None
            if "read-only" in lowered or "read only" in lowered:
                raise InvalidInput(f"read-only: this endpoint never writes ({message})", field="query") from None
            raise InvalidInput(message, field="query") from None
        header = tuple(str(h[1]) if isinstance(h, (list, tuple)) else str(h) for h in (result.header or []))
        rows = result.result_set or []
        return RawResult(
            engine=self.engine, language="cypher", columns=header,
            rows=tuple(tuple(_browse(v) for v in row) for row in rows[:limit]),
            truncated=len(rows) > limit, elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def _refuse_load_csv(self, text: str) -> None:
        """LOAD CSV is a read, so GRAPH.RO_QUERY runs it: local files are confined to the server's empty IMPORT_FOLDER,
        but https:// URLs would be fetched by the server, from wherever it stands. The plan says whether a query
        loads CSV however it is spelt; raw queries never may."""
        plan = self._db.execute_command("GRAPH.EXPLAIN", self._graph_name, text)
        if isinstance(plan, list) and any(str(op).strip().startswith("Load CSV") for op in plan):
            raise InvalidInput("LOAD CSV is not allowed in raw queries: they never read files or URLs", field="query")

    def bootstrap(self) -> None:
        existing = {(c["label"], tuple(c["properties"])) for c in self._constraints()}
        for label in _UNIQUE:
            if (label, ("id",)) not in existing:
                try:
                    self._graph.create_node_unique_constraint(label, "id")
                except redis.ResponseError as exc:  # another process won the race
                    if "already" not in str(exc).lower():
                        raise
        indexed = self._indexed()
        for label, prop in _RANGE:
            if (label, prop) not in indexed:
                try:
                    self._graph.create_node_range_index(label, prop)
                except redis.ResponseError as exc:
                    if "already indexed" not in str(exc).lower():
                        raise

    def _constraints(self) -> list[dict[str, Any]]:
        try:
            return list(self._graph.list_constraints())
        except redis.ResponseError:  # the graph key does not exist yet
            return []

    def _indexed(self) -> set[tuple[str, str]]:
        try:
            rows = self._graph.list_indices().result_set
        except redis.ResponseError:
            return set()
        return {(r[0], p) for r in rows for p in r[1]}

    def clear(self) -> None:
        self._write("MATCH (n) DETACH DELETE n", {})

    def close(self) -> None:
        self._pool.disconnect()
