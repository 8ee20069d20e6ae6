"""FalkorDB over RESP (the `falkordb` client): the embedded default engine.

FalkorDB runs each query alone and atomically, so the one-statement rule of
the store gives serializable check-and-set here. Dialect differences from
Neo4j are kept to the schema bootstrap (GRAPH.CONSTRAINT instead of
CREATE CONSTRAINT) and the lock marker. (FalkorDB 4.16's toJSON() does not
escape quotes inside strings, so results are never shipped as JSON text.)
"""

from __future__ import annotations

from typing import Any

import redis
from falkordb import FalkorDB
from falkordb.edge import Edge
from falkordb.node import Node as FNode

from controlplane.domain.errors import Unavailable
from graph_schema.cypher.base import CypherStore, Row

_UNIQUE = ("Actor", "Node", "Allocation", "Gpu", "Event", "Job", "Task")
_RANGE = (
    ("Allocation", "state"), ("Allocation", "node_id"), ("Allocation", "parent_id"), ("Allocation", "updated_at"),
    ("Node", "status"), ("Node", "cpu_free"), ("Event", "allocation_id"), ("Event", "at"), ("Task", "job_id"),
    ("Job", "state"),
)


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

    def __init__(self, url: str, *, graph: str = "controlplane", timeout_ms: int = 30_000) -> None:
        super().__init__()
        self._pool = redis.ConnectionPool.from_url(url, max_connections=64, decode_responses=True)
        self._db = FalkorDB(connection_pool=self._pool)
        self._graph = self._db.select_graph(graph)
        self._graph_name = graph
        self._timeout_ms = timeout_ms

    def _run(self, ro: bool, query: str, params: dict[str, Any]) -> list[Row]:
        try:
            fn = self._graph.ro_query if ro else self._graph.query
            result = fn(self._dialect(query), params, timeout=self._timeout_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(f"FalkorDB is unreachable: {exc}") from exc
        return [[_plain(v) for v in row] for row in result.result_set]

    def _read(self, query: str, params: dict[str, Any]) -> list[Row]:
        return self._run(True, query, params)

    def _write(self, query: str, params: dict[str, Any]) -> list[Row]:
        return self._run(False, query, params)

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
