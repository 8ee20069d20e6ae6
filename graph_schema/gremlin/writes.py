"""The write traversals of nodes and allocations: each state change is one traversal, one request.

The Gremlin counterpart of cypher/statements.py, statement for statement. Each
traversal checks its precondition before it writes anything (choose/where guards on
what it reads), and Gremlin Server runs a sessionless traversal as one
TinkerTransactionGraph transaction: committed when fully iterated, rolled back on any
error, refused at commit (and rerun by remote.Remote) when another transaction wrote
one of the same elements first. Every value is a traversal argument; nothing here
builds script text. Each traversal returns one result (a map or a folded list), so the
server commits before it sends anything back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Operator, P, Pick

from controlplane.domain.vocabulary import EdgeType, Label
from graph_schema.gremlin.remote import value
from graph_schema.gremlin.steps import (
    ACTORS,
    CLAIMS,
    EV,
    GPU_OWNER,
    NEIGHBOR_OF,
    PARENT_OF,
    RUNS_ON,
    A,
    G,
    N,
    add,
    event_here,
    new_vertex,
    set_props,
    subtract,
    vertex_map,
)

JOB = Label.JOB.value
TASK = Label.TASK.value
EXECUTES = EdgeType.EXECUTES.value

# --- nodes ---------------------------------------------------------------------------------


def register_node(
    g: GraphTraversalSource, *, node: Mapping[str, Any], gpus: Sequence[Mapping[str, Any]], holding: Sequence[str], now: float,
    identity: str | None = None,
) -> GraphTraversal:
    """Upsert the node and its GPUs; free capacity = capacity - what its holding allocations reserve.

    `identity`: a node bound to another identity is left as it is (no answer); an unbound one is bound to it."""
    nid = node["id"]
    t = g.V(nid).has_label(N).fold().coalesce(
        __.unfold(), new_vertex(N, nid, {"registered_at": now, "version": 0})
    )
    if identity is not None:
        t = t.not_(__.has("identity", P.neq(identity))).choose(__.has("identity"), __.identity(),
                                                                __.property("identity", identity))
    t = set_props(t, {**node, "heartbeat_at": now, "child_policy": "cascade"})
    t = t.choose(__.has("status", "draining"), __.identity(), __.property("status", "ready"))  # a drain outlives a restart
    t = add(t, "version", 1)
    for gs in gpus:
        gpu = __.V(gs["id"]).has_label(G).fold().coalesce(__.unfold(), new_vertex(G, gs["id"], {}))
        gpu = set_props(gpu, {"model": gs["model"], "memory": gs["memory"], "node_id": nid,
                              "uuid": gs.get("uuid"), "index": gs.get("index")})
        gpu = gpu.coalesce(__.out(GPU_OWNER).has_id(nid), __.add_e(GPU_OWNER).to(__.V(nid)))
        t = t.side_effect(gpu)
    for key in ("cpu", "memory"):
        held = __.in_(RUNS_ON).has_label(A).has("state", P.within(list(holding))).values(key).sum_()
        t = t.sack(Operator.assign).by(key).sack(Operator.minus).by(__.coalesce(held, __.constant(0)))
        t = t.property(f"{key}_free", __.sack())
    return t.element_map()


def heartbeat(g: GraphTraversalSource, *, node_id: str, now: float) -> GraphTraversal:
    return (
        g.V(node_id).has_label(N)
        .side_effect(__.not_(__.has("heartbeat_at", P.gt(now))).property("heartbeat_at", now))
        .values("status")
    )


def set_node_scheduling(g: GraphTraversalSource, *, node_id: str, cordoned: bool, drain: bool) -> GraphTraversal:
    t = g.V(node_id).has_label(N).property("cordoned", cordoned)
    if drain:
        t = t.choose(__.has("status", "ready"), __.property("status", "draining"), __.identity())
    elif not cordoned:
        t = t.choose(__.has("status", "draining"), __.property("status", "ready"), __.identity())
    return add(t, "version", 1).element_map()


def deregister_node(g: GraphTraversalSource, *, node_id: str, live: Sequence[str]) -> GraphTraversal:
    """Delete the node and its GPUs when it has no live work; the count of that work either way."""
    def work() -> GraphTraversal:  # a new one each time: gremlinpython's steps change the traversal they are called on
        return __.union(
            __.V(node_id).has_label(N).in_(RUNS_ON).has_label(A).has("state", P.within(list(live))),
            __.V(node_id).has_label(N).out(PARENT_OF).has_label(A).has("state", P.within(list(live))),
        ).dedup().count()

    gone = __.side_effect(__.V(node_id).has_label(N).in_(GPU_OWNER).has_label(G).drop()).side_effect(
        __.V(node_id).has_label(N).drop()).constant(0)
    return g.V(node_id).has_label(N).choose(work().is_(0), gone, work())


def connect_neighbors(g: GraphTraversalSource, *, a: str, b: str, rtt_ms: float, bandwidth: float) -> GraphTraversal:
    def link(src: str, dst: str) -> GraphTraversal:
        edge = __.coalesce(
            __.V(src).out_e(NEIGHBOR_OF).where(__.in_v().has_id(dst)),
            __.V(src).add_e(NEIGHBOR_OF).to(__.V(dst)),
        )
        return edge.property("rtt_ms", float(rtt_ms)).property("bandwidth", float(bandwidth))

    return (
        g.V(a).has_label(N).where(__.V(b).has_label(N))
        .side_effect(link(a, b)).side_effect(link(b, a))
        .values("id")
    )


# --- allocations ---------------------------------------------------------------------------


def create_allocations(
    g: GraphTraversalSource,
    *,
    parent_id: str,
    demands: Sequence[Mapping[str, Any]],
    allocs: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    accepts: Sequence[str],
) -> GraphTraversal:
    """Idempotency check, parent liveness, capacity and GPUs of every node, then every write.

    Answers one map: outcome (created | existing | parent_missing | parent_not_live |
    no_capacity), the parent's state, and the batch's allocations as they now are.
    Adding the PARENT_OF edge writes the parent vertex, so a concurrent transition of the
    parent conflicts with this create at commit: no child slips under a parent that stopped.
    """
    ids = [a["id"] for a in allocs]
    parent_live = __.V(parent_id).or_(__.has_label(N), __.has_label(A).has("state", P.within(list(accepts))))
    fitting = [fits(d) for d in demands]
    writes = __.identity()
    for d in demands:
        node = subtract(subtract(__.V(d["node_id"]), "cpu_free", d["cpu"]), "memory_free", d["memory"])
        writes = writes.side_effect(node)
    # The batch travels as data (one list of property maps per node, created by mergeV), so
    # the traversal has as many steps for 10,000 allocations as for one.
    by_node: dict[str, tuple[list[dict[Any, Any]], list[dict[Any, Any]]]] = {}
    for props, ev in zip(allocs, events, strict=True):
        group = by_node.setdefault(props["node_id"], ([], []))
        group[0].append(vertex_map(A, props))
        group[1].append(vertex_map(EV, ev))
    for node_id, (vertices, evs) in by_node.items():
        created = __.constant(vertices).unfold().merge_v().side_effect(__.add_e(PARENT_OF).from_(__.V(parent_id)))
        writes = writes.side_effect(created.add_e(RUNS_ON).to(__.V(node_id)))
        writes = writes.side_effect(__.constant(evs).unfold().merge_v())
    for props in allocs:
        # a job's allocations execute its Task (or, for the job's root, the Job itself), when it exists
        for key, label in (("task_id", TASK), ("root_of", JOB)):
            if props.get(key) is not None:
                writes = writes.side_effect(__.V(props[key]).has_label(label).add_e(EXECUTES).from_(__.V(props["id"])))
        for gid in props.get("gpu_ids") or ():
            writes = writes.side_effect(__.V(gid).property("claimed_by", props["id"]).add_e(CLAIMS).from_(__.V(props["id"])))
    t = g.inject(0).choose(
        __.V(ids[0]).has_label(A),
        __.constant("existing"),
        __.choose(
            __.not_(__.V(parent_id).has_label(*ACTORS)),
            __.constant("parent_missing"),
            __.choose(
                __.not_(parent_live),
                __.constant("parent_not_live"),
                __.choose(__.and_(*fitting), writes.constant("created"), __.constant("no_capacity")),
            ),
        ),
    )
    return t.project("outcome", "parent_state", "allocations").by(__.identity()).by(
        __.coalesce(__.V(parent_id).values("state"), __.constant(""))
    ).by(__.V(*ids).has_label(A).element_map().fold())


def fits(d: Mapping[str, Any]) -> GraphTraversal:
    node = (
        __.V(d["node_id"]).has_label(N).has("status", "ready").not_(__.has("cordoned", True))
        .has("cpu_free", P.gte(value(d["cpu"]))).has("memory_free", P.gte(value(d["memory"])))
    )
    gpu_ids = list(d["gpu_ids"])
    if not gpu_ids:
        return node
    free = __.in_(GPU_OWNER).has_label(G).has_id(P.within(gpu_ids)).not_(__.has("claimed_by")).count()
    return node.where(free.is_(len(gpu_ids)))


def transitions(
    g: GraphTraversalSource, *, changes: Sequence[Mapping[str, Any]], holding: Sequence[str], live: Sequence[str],
    now: float, tick: int,
) -> GraphTraversal:
    """Every change in order, in one traversal: a map per change (applied, prev, the allocation), or 'missing'."""
    t = g.inject(0).project(*[f"c{i}" for i in range(len(changes))])
    for c in changes:
        t = t.by(_transition(c, holding=set(holding), live=list(live), now=now, tick=tick))
    return t


def _transition(c: Mapping[str, Any], *, holding: set[str], live: list[str], now: float, tick: int) -> GraphTraversal:
    """One change: the current state picks the move (choose/option on `state`), or it is refused."""
    refused = __.project("applied", "a").by(__.constant(False)).by(__.element_map())
    pick = __.choose(__.values("state"))
    for prev, move in c["moves"].items():
        if move == "stopped":  # a stop of an allocation that escalated ends `failed` (its parent then decides)
            branch = __.choose(__.has("escalated"), _apply(c, prev, "failed", holding, now, tick),
                              _apply(c, prev, move, holding, now, tick))
        else:
            branch = _apply(c, prev, move, holding, now, tick)
        if c.get("leaf_only") and prev == "stopping":  # a cascading parent ends only after its children
            waits = __.not_(__.has("child_policy", P.neq("cascade"))).out(PARENT_OF).has_label(A).has("state", P.within(live))
            branch = __.choose(waits, refused, branch)
        pick = pick.option(prev, branch)
    one = pick.option(Pick.none, refused)
    if c.get("incarnation") is not None:
        one = __.choose(__.has("incarnation", value(c["incarnation"])), one, refused)
    if c.get("on_node") is not None:  # node restriction: only a process allocation placed on the reporting node
        one = __.choose(__.has("node_id", c["on_node"]).has("executor", "process"), one, refused)
    return __.V(c["id"]).has_label(A).fold().coalesce(__.unfold().map(one), __.constant("missing"))


def _apply(c: Mapping[str, Any], prev: str, to: str, holding: set[str], now: float, tick: int) -> GraphTraversal:
    t = add(__.as_("moved").property("state", to), "version", 1).property("updated_at", now)
    t = set_props(t, c.get("fields") or {})
    if to == "failed":
        escalated = __.property("error", __.constant("escalated: ").concat(__.select("moved").values("escalated").as_string()))
        failure = __.property("error", c["failure"]) if c.get("failure") is not None else __.identity()
        t = t.choose(__.has("escalated"), escalated, failure)
    event = {"to": to, "at": now, "tick": tick, "reason": c.get("reason"), "by": c.get("by")}
    t = t.side_effect(event_here("transition", event, from_state=prev))
    if prev in holding and to not in holding:
        t = release(t)
    return t.project("applied", "prev", "a").by(__.constant(True)).by(__.constant(prev)).by(__.element_map())


def release(t: GraphTraversal) -> GraphTraversal:
    """On an allocation leaving the holding states: give its cpu, memory and GPUs back to its node."""
    for key in ("cpu", "memory"):
        node = __.sack(Operator.assign).by(key).out(RUNS_ON).has_label(N).sack(Operator.sum_).by(f"{key}_free")
        t = t.side_effect(node.property(f"{key}_free", __.sack()))
    return t.side_effect(__.out(CLAIMS).has_label(G).properties("claimed_by").drop()).side_effect(__.out_e(CLAIMS).drop())
