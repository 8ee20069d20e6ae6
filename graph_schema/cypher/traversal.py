"""Compile a validated TraversalSpec to Cypher: vocabulary names in the text, values as parameters."""

from __future__ import annotations

from typing import Any

from controlplane.domain.traversal import Op, TraversalSpec
from controlplane.domain.vocabulary import Direction

_OPS = {Op.EQ: "=", Op.NE: "<>", Op.LT: "<", Op.LTE: "<=", Op.GT: ">", Op.GTE: ">="}


def compile_traversal(spec: TraversalSpec) -> tuple[str, dict[str, Any]]:
    assert spec.start_label is not None, "the service resolves the start vertex's label first"
    types = "|".join(t.value for t in spec.edge_types)
    hops = f"*{int(spec.min_depth)}..{int(spec.max_depth)}"
    left, right = {Direction.OUT: ("-", "->"), Direction.IN: ("<-", "-"), Direction.BOTH: ("-", "-")}[spec.direction]
    params: dict[str, Any] = {"start": spec.start_id, "limit": spec.limit, "after": spec.after}
    where = ["($after IS NULL OR x.id > $after)", "x.id IS NOT NULL"]
    if spec.target_label is not None:
        where.append(f"x:{spec.target_label.value}")
    for i, f in enumerate(spec.filters):
        name = f"f{i}"
        params[name] = f.value
        prop = f"x.{f.property}"  # the property name was checked against the vocabulary
        if f.op is Op.IN:
            where.append(f"{prop} IN ${name}")
        elif f.op is Op.CONTAINS:
            where.append(f"${name} IN {prop}")
        else:
            where.append(f"{prop} {_OPS[f.op]} ${name}")
    query = (
        f"MATCH (s:{spec.start_label.value} {{id: $start}}){left}[:{types}{hops}]{right}(x)\n"
        f"WITH DISTINCT x WHERE {' AND '.join(where)}\n"
        "RETURN labels(x), properties(x) ORDER BY x.id LIMIT $limit"
    )
    return query, params
