"""Gremlin / TinkerPop (through gremlinpython): the third graph engine, same interface, same suite.

Tested against a real Gremlin Server (TinkerPop 3.8) over an in-memory
TinkerTransactionGraph (tests/gremlin_harness); written for any TinkerPop server that
runs a sessionless bytecode traversal as one transaction (JanusGraph, Neptune).

Guarantees, compared with the Cypher engines:

- One state change is one traversal, one request, its precondition inside it; the
  server commits the whole traversal or nothing (TinkerTransactionGraph), so
  create_allocations is all or nothing over the batch, and every write is idempotent
  when repeated (it re-reads its precondition).
- Isolation is optimistic, not locking: each element is copied into the transaction when
  first read and a commit fails when another transaction committed the same element
  meanwhile. Remote reruns the traversal (as the Neo4j driver reruns a deadlocked
  transaction). A check that only *reads* an element is not protected: every traversal
  here writes what its precondition reads (the node it reserves on, the parent it links
  to, the GPU it claims), so no check-and-set can be lost. Shown in tests/test_gremlin_limits.py.
- On a plain TinkerGraph (no transactions) none of this holds: a traversal that fails half
  way leaves its first writes, and concurrent traversals interleave. Configure
  TinkerTransactionGraph (the harness does).
- TinkerGraph keeps the graph in memory: a restarted Gremlin Server has lost it (unless
  gremlin.tinkergraph.graphLocation is set, which writes only on a clean close).
- No unique constraint but the vertex id: ids are T.id, so the graph refuses duplicates
  across Nodes, Allocations, GPUs, Events, Jobs and Tasks (one id space; Cypher has one
  per label). The id formats never meet (GPU and task ids hold '/', event ids ':').
- No remote schema API: bootstrap() declares nothing. Equality lookups on state, status,
  node_id, parent_id, allocation_id, spread_key and job_id are fast only where the server
  indexes them (the test harness does, in Java); elsewhere they are scans.
- Semantic traversals walk trails like Cypher (no edge twice in one path; see semantic.py).
- raw_query takes Gremlin text (gremlin-lang grammar, no Groovy), not Cypher, run against
  the server's read-only traversal source `g_ro`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import P

from controlplane.domain.lifecycle import ACCEPTS_CHILDREN, HOLDS_RESOURCES, LIVE, State
from controlplane.domain.records import AllocationRecord, GpuRecord, NeighborRecord, NodeRecord, TransitionResult, Vertex
from controlplane.domain.specs import NodeSpec
from controlplane.domain.traversal import TraversalSpec
from controlplane.domain.vocabulary import ALLOCATION_CORE, ALLOCATION_PROPERTIES
from controlplane.ports.store import Change, CreateRefused, NewAllocation, node_demands
from graph_schema.gremlin import writes
from graph_schema.gremlin.placement import PlacementMixin
from graph_schema.gremlin.raw import RawQueryMixin
from graph_schema.gremlin.remote import Access, Remote, props_of, split_element
from graph_schema.gremlin.retention import RetentionMixin
from graph_schema.gremlin.semantic import compile_traversal
from graph_schema.gremlin.steps import ACTORS, GPU_OWNER, NEIGHBOR_OF, PARENT_OF, RUNS_ON, A, G, N
from graph_schema.gremlin.supervision import SupervisionMixin

_HOLDING = sorted(s.value for s in HOLDS_RESOURCES)
_ACCEPTS = sorted(s.value for s in ACCEPTS_CHILDREN)
_LIVE = sorted(s.value for s in LIVE)


def vertex(m: dict[Any, Any]) -> Vertex:
    label, p = split_element(m)
    p = {k: v for k, v in p.items() if not k.startswith("_")}
    if isinstance(p.get("env"), str):
        try:
            p["env"] = json.loads(p["env"])
        except ValueError:
            pass
    return Vertex(label=label, id=str(p.get("id", "")), properties=p)


def allocation(m: dict[Any, Any]) -> AllocationRecord:
    return AllocationRecord.from_props(props_of(m))


class GremlinStore(SupervisionMixin, PlacementMixin, RawQueryMixin, RetentionMixin):
    """The GraphStore on a Gremlin Server; the mixins hold the supervision, placement, raw-query and retention methods."""

    engine = "gremlin"

    def __init__(self, url: str, *, traversal_source: str = "g", pool_size: int = 8, read_timeout_s: float | None = None,
                 access: Access | None = None) -> None:
        """`access`: the server's user and password (SimpleAuthenticator) and the CA of its wss:// certificate."""
        self._remote = Remote(url, traversal_source=traversal_source, pool_size=pool_size, read_timeout_s=read_timeout_s,
                              access=access)

    @property
    def remote(self) -> Remote:
        """The connection, for the parts of the product with traversals of their own (jobs)."""
        return self._remote

    def bootstrap(self) -> None:
        """Nothing to declare: ids are vertex ids (unique by construction) and TinkerGraph has no remote index API."""
        self.ping()

    def close(self) -> None:
        self._remote.close()

    def ping(self) -> None:
        self._remote.run(lambda g: g.inject(1), write=False)

    def clear(self) -> None:
        self._remote.run(lambda g: g.V().drop())

    # --- nodes -------------------------------------------------------------------------
    def register_node(self, *, spec: NodeSpec, now: float, identity: str | None = None) -> NodeRecord | None:
        node = {
            "id": spec.name, "name": spec.name, "labels": list(spec.label_list()),
            "cpu": spec.cpu_milli, "memory": spec.memory_mib, "isolation": spec.isolation,
        }
        supervision = getattr(spec, "supervision", None)
        if supervision is not None:
            node["supervision"] = supervision.model_dump_json()
        gpus = [{"id": f"{spec.name}/gpu{i}", "model": g.model, "memory": g.memory_mib, "uuid": g.uuid, "index": g.index}
                for i, g in enumerate(spec.gpus)]
        m = self._remote.one(lambda g: writes.register_node(g, node=node, gpus=gpus, holding=_HOLDING, now=now,
                                                            identity=identity))
        return NodeRecord.from_props(props_of(m)) if m else None

    def heartbeat(self, *, node_id: str, now: float) -> str | None:
        status = self._remote.one(lambda g: writes.heartbeat(g, node_id=node_id, now=now))
        return str(status) if status is not None else None

    def set_node_scheduling(self, *, node_id: str, cordoned: bool, drain: bool) -> NodeRecord | None:
        m = self._remote.one(lambda g: writes.set_node_scheduling(g, node_id=node_id, cordoned=cordoned, drain=drain))
        return NodeRecord.from_props(props_of(m)) if m else None

    def deregister_node(self, *, node_id: str) -> int | None:
        r = self._remote.one(lambda g: writes.deregister_node(g, node_id=node_id, live=_LIVE))
        return int(r) if r is not None else None

    def connect_neighbors(self, *, a: str, b: str, rtt_ms: float, bandwidth: float) -> bool:
        return bool(self._remote.run(lambda g: writes.connect_neighbors(g, a=a, b=b, rtt_ms=rtt_ms, bandwidth=bandwidth)))

    def get_node(self, *, node_id: str) -> NodeRecord | None:
        m = self._read_one(lambda g: g.V(node_id).has_label(N).element_map())
        return NodeRecord.from_props(props_of(m)) if m else None

    def list_nodes(self, *, after: str | None, limit: int, status: str | None = None) -> list[NodeRecord]:
        def build(g: Any) -> GraphTraversal:
            t = g.V().has_label(N)
            if after is not None:
                t = t.has("id", P.gt(after))
            if status is not None:
                t = t.has("status", status)
            return t.order().by("id").limit(int(limit)).element_map()

        return [NodeRecord.from_props(props_of(m)) for m in self._read(build)]

    def neighbors(self, *, node_id: str) -> list[NeighborRecord]:
        rows = self._read(
            lambda g: g.V(node_id).has_label(N).out_e(NEIGHBOR_OF).where(__.in_v().has_label(N))
            .project("id", "rtt_ms", "bandwidth").by(__.in_v().values("id")).by("rtt_ms").by("bandwidth")
        )
        found = [NeighborRecord(node_id=r["id"], rtt_ms=float(r["rtt_ms"]), bandwidth=float(r["bandwidth"])) for r in rows]
        return sorted(found, key=lambda n: (n.rtt_ms, n.node_id))

    def gpus(self, *, node_id: str) -> list[GpuRecord]:
        rows = self._read(lambda g: g.V(node_id).has_label(N).in_(GPU_OWNER).has_label(G).order().by("id").element_map())
        return [GpuRecord.from_props(props_of(m)) for m in rows]

    # --- allocations -------------------------------------------------------------------
    def create_allocations(self, *, parent_id: str, allocations: Sequence[NewAllocation], now: float) -> list[AllocationRecord]:
        if not allocations:
            return []
        ordered = node_demands(allocations)
        props: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        tick = time.time_ns()
        for a in allocations:
            props.append(_allocation_props(a, parent_id=parent_id, now=now))
            events.append({
                "id": f"{a.id}:1", "kind": "transition", "allocation_id": a.id, "incarnation": 1, "from": "pending",
                "to": "placed", "at": now, "tick": tick, "reason": f"spawned by {parent_id} on {a.node_id}",
                "by": (a.extra or {}).get("created_by") or parent_id, "parent": parent_id,
            })
        r = self._remote.one(lambda g: writes.create_allocations(
            g, parent_id=parent_id, demands=ordered, allocs=props, events=events, accepts=_ACCEPTS))
        outcome = r["outcome"]
        if outcome in ("created", "existing") and r["allocations"]:
            return sorted((allocation(m) for m in r["allocations"]), key=lambda a: a.extra.get("seq", 0))
        if outcome == "parent_missing":
            raise CreateRefused(CreateRefused.PARENT_MISSING, parent_id)
        if outcome == "parent_not_live":
            raise CreateRefused(CreateRefused.PARENT_NOT_LIVE, f"{parent_id} is {r['parent_state']}")
        raise CreateRefused(CreateRefused.NO_CAPACITY, ", ".join(d["node_id"] for d in ordered))

    def transition_many(self, *, changes: Sequence[Change], now: float) -> list[TransitionResult | None]:
        if not changes:
            return []
        params = [
            {
                "id": c.allocation_id, "moves": {k.value: v.value for k, v in c.move.steps.items()},
                "incarnation": c.incarnation, "fields": {k: v for k, v in c.fields.items() if v is not None},
                "failure": c.failure, "reason": c.reason, "by": c.by, "leaf_only": c.leaf_only,
                "on_node": c.on_node,
            }
            for c in changes
        ]
        tick = time.time_ns()
        r = self._remote.one(lambda g: writes.transitions(g, changes=params, holding=_HOLDING, live=_LIVE, now=now, tick=tick))
        results: list[TransitionResult | None] = []
        for i in range(len(changes)):
            x = r[f"c{i}"]
            if x == "missing":
                results.append(None)
            else:
                results.append(TransitionResult(allocation(x["a"]), State(x["prev"]) if x["applied"] else None))
        return results

    def get_allocation(self, *, allocation_id: str) -> AllocationRecord | None:
        m = self._read_one(lambda g: g.V(allocation_id).has_label(A).element_map())
        return allocation(m) if m else None

    def get_allocations(self, *, allocation_ids: Sequence[str]) -> list[AllocationRecord]:
        if not allocation_ids:
            return []
        return [allocation(m) for m in self._read(lambda g: g.V(*allocation_ids).has_label(A).element_map())]

    def list_allocations(
        self, *, after: str | None, limit: int, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]:
        def build(g: Any) -> GraphTraversal:
            t = g.V(node_id).has_label(N).in_(RUNS_ON).has_label(A) if node_id is not None else g.V().has_label(A)
            if node_id is not None:
                t = t.has("node_id", node_id)
            if after is not None:
                t = t.has("id", P.gt(after))
            if state is not None:
                t = t.has("state", state)
            return t.order().by("id").limit(int(limit)).element_map()

        return [allocation(m) for m in self._read(build)]

    def children(self, *, parent_id: str, after: str | None, limit: int) -> list[AllocationRecord]:
        def build(g: Any) -> GraphTraversal:
            t = g.V(parent_id).has_label(*ACTORS).out(PARENT_OF).has_label(A)
            if after is not None:
                t = t.has("id", P.gt(after))
            return t.order().by("id").limit(int(limit)).element_map()

        return [allocation(m) for m in self._read(build)]

    def descendants(
        self, *, root_id: str, max_depth: int, limit: int, fields: Collection[str] | None = None
    ) -> list[AllocationRecord]:
        keys: list[str] = []
        if fields is not None:  # only these properties (checked against the vocabulary) and the core ones
            keys = list(dict.fromkeys([*ALLOCATION_CORE, *sorted(set(fields) & ALLOCATION_PROPERTIES)]))
        rows = self._read(
            lambda g: g.V(root_id).has_label(*ACTORS).repeat(__.out(PARENT_OF)).emit().times(int(max_depth))
            .has_label(A).dedup().order().by("id").limit(int(limit)).element_map(*keys)
        )
        return [allocation(m) for m in rows]

    def ancestors(self, *, allocation_id: str) -> list[Vertex]:
        # one parent each: the walk up is a single chain, emitted parent first
        rows = self._read(
            lambda g: g.V(allocation_id).has_label(*ACTORS).repeat(__.in_(PARENT_OF)).emit().times(256).element_map()
        )
        return [vertex(m) for m in rows]

    def actor_label(self, *, actor_id: str) -> str | None:
        label = self._read_one(lambda g: g.V(actor_id).has_label(N, A, G).label())
        return str(label) if label is not None else None

    def traverse(self, *, spec: TraversalSpec) -> list[Vertex]:
        return [vertex(m) for m in self._read(lambda g: compile_traversal(g, spec))]

    # --- plumbing ----------------------------------------------------------------------
    def _read(self, build: Any) -> list[Any]:
        return self._remote.run(build, write=False)

    def _read_one(self, build: Any) -> Any:
        return self._remote.one(build, write=False)


def _allocation_props(a: NewAllocation, *, parent_id: str, now: float) -> dict[str, Any]:
    """The allocation's properties: exactly those the Cypher engines store."""
    p = asdict(a)
    p.pop("env_json")
    extra = p.pop("extra") or {}
    p.update(
        env=a.env_json, argv=list(a.argv), gpu_ids=list(a.gpu_ids), node_labels=list(a.node_labels), gpu_model=a.gpu_model or "",
        parent_id=parent_id, state=State.PLACED.value, incarnation=1, version=1, created_at=now, updated_at=now,
    )
    p.update(extra)
    return {k: v for k, v in p.items() if v is not None}
