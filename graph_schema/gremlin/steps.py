"""Small Gremlin fragments every write traversal is made of, so the traversals cannot drift.

The graph is the one the Cypher engines keep: same vertex labels, edge labels and
property names. Differences, all forced by TinkerPop's model:

- A vertex has one label, so the Cypher `Actor` label is not stored: an actor is a
  vertex labelled `Node` or `Allocation` (`ACTORS`).
- The vertex id (T.id) is the control plane's own id, also kept as the property `id`
  (what operators and filters see). `g.V(id)` is then a hash lookup, and the graph
  itself refuses a second vertex with an id: the uniqueness constraint Cypher declares.
- `labels`, `argv` and `gpu_ids` are stored as one property whose value is a list (not
  multi-properties), so a vertex's elementMap() is the dict the Cypher adapters read.
- Lookups by state or status are equality lookups (one per value), which TinkerGraph
  answers from an index when the server declared one (tests/gremlin_harness does).
- Arithmetic on stored integers goes through the traverser's sack (assign, then
  sum/minus), which keeps integers integral; `math()` would turn them into doubles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Operator, T

from controlplane.domain.vocabulary import EdgeType, Label
from graph_schema.gremlin.remote import value

A = Label.ALLOCATION.value
N = Label.NODE.value
G = Label.GPU.value
EV = Label.EVENT.value
ACTORS = (N, A)
PARENT_OF = EdgeType.PARENT_OF.value
RUNS_ON = EdgeType.RUNS_ON.value
GPU_OWNER = EdgeType.GPU_OWNER.value
CLAIMS = EdgeType.CLAIMS.value
NEIGHBOR_OF = EdgeType.NEIGHBOR_OF.value
WATCHES = EdgeType.WATCHES.value


def having(g: GraphTraversalSource, label: str, key: str, values: Sequence[Any]) -> GraphTraversal:
    """Vertices of `label` whose `key` is one of `values`, as equality lookups (TinkerGraph indexes only `eq`)."""
    vals = [value(v) for v in dict.fromkeys(values)]
    if len(vals) == 1:
        return g.V().has_label(label).has(key, vals[0])
    return g.inject(0).union(*[__.V().has_label(label).has(key, v) for v in vals])


def set_props(t: GraphTraversal, props: Mapping[str, Any], *, drop_none: bool = False) -> GraphTraversal:
    """Set each property; a None value is skipped, or (drop_none) removes the property like Cypher's `SET x.k = null`."""
    for k, v in props.items():
        if v is None:
            if drop_none:
                t = t.side_effect(__.properties(k).drop())
        else:
            t = t.property(k, value(v))
    return t


def add(t: GraphTraversal, key: str, amount: Any) -> GraphTraversal:
    """key = key + amount, where amount is a number or a traversal evaluated on the current element."""
    by = amount if isinstance(amount, GraphTraversal) else __.constant(value(amount))
    return t.sack(Operator.assign).by(key).sack(Operator.sum_).by(by).property(key, __.sack())


def subtract(t: GraphTraversal, key: str, amount: Any) -> GraphTraversal:
    by = amount if isinstance(amount, GraphTraversal) else __.constant(value(amount))
    return t.sack(Operator.assign).by(key).sack(Operator.minus).by(by).property(key, __.sack())


def new_vertex(label: str, vid: Any, props: Mapping[str, Any]) -> GraphTraversal:
    """addV with our id as T.id and as the property `id` (vid may be a traversal computing it)."""
    t = __.add_v(label).property(T.id, vid if isinstance(vid, GraphTraversal) else value(vid))
    t = t.property("id", vid if isinstance(vid, GraphTraversal) else value(vid))
    return set_props(t, props)


def vertex_map(label: str, props: Mapping[str, Any]) -> dict[Any, Any]:
    """A new vertex as mergeV's map: label, our id as T.id, and its properties (None ones left out)."""
    m: dict[Any, Any] = {T.label: label, T.id: props["id"]}
    m.update((k, value(v)) for k, v in props.items() if v is not None)
    return m


def event_here(kind: str, props: Mapping[str, Any], *, from_state: Any = None) -> GraphTraversal:
    """From an allocation vertex (already moved to its new version): its transition event.

    The event's id is `<allocation id>:<version>`, as in the Cypher engines, computed in the
    traversal because the version is. `from_state` may be a constant or a traversal.
    """
    eid = __.select("ev_of").values("id").concat(__.constant(":"), __.select("ev_of").values("version").as_string())
    t = __.as_("ev_of").add_v(EV).property(T.id, eid).property("id", eid)
    t = t.property("kind", kind).property("allocation_id", __.select("ev_of").values("id"))
    t = t.property("incarnation", __.select("ev_of").values("incarnation"))
    if from_state is not None:
        t = t.property("from", from_state)
    return set_props(t, props)
