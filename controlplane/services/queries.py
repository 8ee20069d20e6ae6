"""Asking the graph: nodes, allocations, the hierarchy, semantic traversals, events, raw read-only queries.

Read-only use cases with their limits checked (page sizes, depths, the raw
query's size, time and rows); the store compiles each to its engine's language.
The expensive ones (raw queries, traversals, descendants) pass a gate: at most
so many at once, then a short wait, then BUSY — so a flood of readers cannot
take every engine thread from the control plane's own writes (the engine-side
time limit is the store's, set where it is opened).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import PurePath
from typing import Protocol, TypeVar

from controlplane.domain.errors import Busy, InvalidInput, NotFound
from controlplane.domain.lifecycle import LIVE, State, parse_state
from controlplane.domain.records import (
    AllocationRecord,
    Event,
    GpuRecord,
    LogLocation,
    NeighborRecord,
    NodeRecord,
    RawResult,
    Vertex,
)
from controlplane.domain.text import Id, Line, Text, checked
from controlplane.domain.traversal import TraversalSpec
from controlplane.domain.vocabulary import Label
from controlplane.ports.store import Admin, Hierarchy, History, Topology

MAX_PAGE = 1_000
RAW_QUERY_MAX_CHARS = 20_000
RAW_QUERY_MAX_ROWS = 10_000
RAW_QUERY_MAX_TIMEOUT_S = 60.0


T = TypeVar("T")


class QueryStore(Topology, Hierarchy, History, Admin, Protocol):
    """Everything a reader may ask."""




class QueryGate:
    """At most `limit` expensive queries at once; one more waits `wait_s`, then is refused BUSY."""

    def __init__(self, limit: int = 4, *, wait_s: float = 2.0) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(limit)

    def run(self, fn: Callable[[], T]) -> T:
        if not self._slots.acquire(timeout=self.wait_s):
            raise Busy(f"{self.limit} expensive queries are running already; try again shortly", field="query")
        try:
            return fn()
        finally:
            self._slots.release()


class GraphQueries:
    def __init__(self, store: QueryStore, *, gate: QueryGate | None = None) -> None:
        self.store = store
        self.gate = gate or QueryGate()

    # --- nodes -------------------------------------------------------------------------
    @checked(node_id=Id("id"))
    def node(self, node_id: str) -> NodeRecord:
        found = self.store.get_node(node_id=node_id)
        if found is None:
            raise NotFound(f"no node {node_id!r}", field="id")
        return found

    @checked(after=Id("after"), status=Line("status", max_length=64))
    def nodes(self, *, after: str | None = None, limit: int = 100, status: str | None = None) -> list[NodeRecord]:
        return self.store.list_nodes(after=after, limit=page(limit), status=status)

    @checked(node_id=Id("id"))
    def neighbors(self, node_id: str) -> list[NeighborRecord]:
        return self.store.neighbors(node_id=node_id)

    @checked(node_id=Id("id"))
    def gpus(self, node_id: str) -> list[GpuRecord]:
        return self.store.gpus(node_id=node_id)

    # --- allocations and the hierarchy -------------------------------------------------
    @checked(allocation_id=Id("id"))
    def allocation(self, allocation_id: str) -> AllocationRecord:
        found = self.store.get_allocation(allocation_id=allocation_id)
        if found is None:
            raise NotFound(f"no allocation {allocation_id!r}", field="id")
        return found

    @checked(after=Id("after"), state=Line("state", max_length=64), node_id=Id("node"))
    def allocations(
        self, *, after: str | None = None, limit: int = 100, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]:
        if state is not None:
            parse_state(state)
        return self.store.list_allocations(after=after, limit=page(limit), state=state, node_id=node_id)

    @checked(parent_id=Id("id"), after=Id("after"))
    def children(self, parent_id: str, *, after: str | None = None, limit: int = 100) -> list[AllocationRecord]:
        return self.store.children(parent_id=parent_id, after=after, limit=page(limit))

    @checked(root_id=Id("id"), fields=Line("fields", max_length=64))
    def descendants(
        self, root_id: str, *, max_depth: int = 64, limit: int = 10_000, fields: Collection[str] | None = None
    ) -> list[AllocationRecord]:
        """`fields`: the allocation properties the caller will read (a projection; None: all)."""
        if not 1 <= max_depth <= 256:
            raise InvalidInput("must be between 1 and 256", field="maxDepth")
        if not 1 <= limit <= 100_000:
            raise InvalidInput("must be between 1 and 100000", field="first")
        return self.gate.run(lambda: self.store.descendants(root_id=root_id, max_depth=max_depth, limit=limit, fields=fields))

    @checked(allocation_id=Id("id"))
    def ancestors(self, allocation_id: str) -> list[Vertex]:
        return self.store.ancestors(allocation_id=allocation_id)

    @checked(target_ids=Id("ids"))
    def watchers(self, target_ids: list[str]) -> dict[str, list[str]]:
        return self.store.watchers(target_ids=target_ids)

    def traverse(self, spec: TraversalSpec) -> list[Vertex]:
        label = self.store.actor_label(actor_id=spec.start_id)
        if label is None:
            raise NotFound(f"no vertex with id {spec.start_id!r}", field="from")
        return self.gate.run(lambda: self.store.traverse(spec=replace(spec, start_label=Label(label))))

    @checked(allocation_id=Id("id"))
    def log_of(self, allocation_id: str, incarnation: int | None = None) -> LogLocation:
        """Where an incarnation's output is (default: the current one): its node and its file there."""
        a = self.allocation(allocation_id)
        if a.executor != "process":
            raise InvalidInput(f"allocation {a.id} is {a.executor}: it runs no process and writes no output", field="id")
        n = a.incarnation if incarnation is None else incarnation
        if not 1 <= n <= a.incarnation:
            raise InvalidInput(f"allocation {a.id} has incarnations 1 to {a.incarnation}", field="incarnation")
        if n == a.incarnation:
            started = a.pid is not None or a.extra.get("log_path") is not None or a.extra.get("started_at") is not None
            path = a.extra.get("log_path")
            return LogLocation(a.id, n, a.node_id, str(path) if path else None, started, a.state in LIVE, a.output_tail)
        ran = [e for e in self.store.events(allocation_id=a.id, since=None, limit=10_000)
               if e.kind == "transition" and e.incarnation == n and e.to_state == State.RUNNING.value]
        node = ran[0].by if ran and ran[0].by else None
        path = None
        current = a.extra.get("log_path")
        if node is not None and node == a.node_id and current:  # beside the current incarnation's file
            path = str(PurePath(str(current)).with_name(f"{a.id}.{n}.log"))
        return LogLocation(a.id, n, node or a.node_id, path, bool(ran), False, None)

    # --- history and raw queries ---------------------------------------------------------
    @checked(allocation_id=Id("allocation"))
    def events(self, allocation_id: str | None = None, *, since: float | None = None, limit: int = 100) -> list[Event]:
        if not 1 <= limit <= 10_000:
            raise InvalidInput("must be between 1 and 10000", field="first")
        if allocation_id is not None and self.store.actor_label(actor_id=allocation_id) is None:
            raise NotFound(f"no node or allocation {allocation_id!r}", field="allocation")
        return self.store.events(allocation_id=allocation_id, since=since, limit=limit)

    @checked(text=Text("query", max_length=RAW_QUERY_MAX_CHARS))
    def raw_query(self, text: str, *, timeout_s: float = 10.0, limit: int = 1000) -> RawResult:
        """A read-only query in the engine's own language (Cypher on FalkorDB/Neo4j, Gremlin on Gremlin)."""
        check_raw_query(text, timeout_s, limit)
        return self.gate.run(lambda: self.store.raw_query(text=text, timeout_s=timeout_s, limit=limit))


def check_raw_query(text: str, timeout_s: float, limit: int) -> None:
    if not text or not text.strip():
        raise InvalidInput("must not be empty", field="query")
    if len(text) > RAW_QUERY_MAX_CHARS:
        raise InvalidInput(f"at most {RAW_QUERY_MAX_CHARS} characters", field="query")
    if not 0 < timeout_s <= RAW_QUERY_MAX_TIMEOUT_S:
        raise InvalidInput(f"must be between 0 and {RAW_QUERY_MAX_TIMEOUT_S:g} seconds", field="timeoutS")
    if not 1 <= limit <= RAW_QUERY_MAX_ROWS:
        raise InvalidInput(f"must be between 1 and {RAW_QUERY_MAX_ROWS}", field="limit")


def page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field="first")
    return limit
