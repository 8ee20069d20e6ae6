"""Compile a validated TraversalSpec to Gremlin steps: vocabulary names as step arguments, values as P predicates.

Same answers as the Cypher engines' `(s)-[:TYPES*min..max]-(x)`: Cypher walks trails
(a path never uses one edge twice, but may revisit a vertex), so this walk carries the
ids of the edges it used in its sack and never takes one of them again. A plain
`repeat(both())` would walk back over the edge it came by and reach the start again;
`simplePath()` would forbid revisiting vertices, which Cypher allows (a -> b -> a over
the two NEIGHBOR_OF edges of a pair of nodes).

Filters: eq/ne/lt/lte/gt/gte are has(prop, P.*); `in` is P.within; `contains` (a value in
a list property such as `labels`) unfolds the stored list: list properties are single
values holding a list (see steps.py). On a scalar property `contains` behaves as `eq`,
where Cypher would refuse the query.
"""

from __future__ import annotations

from collections.abc import Callable

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Operator, P, T

from controlplane.domain.traversal import Filter, Op, TraversalSpec
from controlplane.domain.vocabulary import Direction
from graph_schema.gremlin.remote import value

_PREDICATES: dict[Op, Callable[[object], P]] = {
    Op.EQ: P.eq, Op.NE: P.neq, Op.LT: P.lt, Op.LTE: P.lte, Op.GT: P.gt, Op.GTE: P.gte,
}


def compile_traversal(g: GraphTraversalSource, spec: TraversalSpec) -> GraphTraversal:
    assert spec.start_label is not None, "the service resolves the start vertex's label first"
    types = [t.value for t in spec.edge_types]
    edges = {Direction.OUT: __.out_e, Direction.IN: __.in_e, Direction.BOTH: __.both_e}[spec.direction](*types)
    step = (
        edges.as_("hop")
        .not_(__.sack().unfold().where(P.eq("hop")).by().by(T.id))
        .sack(Operator.assign).by(__.union(__.sack().unfold(), __.select("hop").id_()).fold())
        .other_v()
    )
    t = (
        g.with_sack([]).V(spec.start_id).has_label(spec.start_label.value)
        .emit(__.loops().is_(P.gte(int(spec.min_depth))))
        .repeat(step).times(int(spec.max_depth))
        .dedup().has("id")
    )
    if spec.after is not None:
        t = t.has("id", P.gt(spec.after))
    if spec.target_label is not None:
        t = t.has_label(spec.target_label.value)
    for f in spec.filters:
        t = _filter(t, f)
    return t.order().by("id").limit(int(spec.limit)).element_map()


def _filter(t: GraphTraversal, f: Filter) -> GraphTraversal:
    if f.op is Op.IN:
        return t.has(f.property, P.within(value(list(f.value))))
    if f.op is Op.CONTAINS:
        return t.where(__.values(f.property).unfold().is_(P.eq(value(f.value))))
    return t.has(f.property, _PREDICATES[f.op](value(f.value)))
