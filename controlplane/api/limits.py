"""How much one request may ask for, checked before anything runs.

Depth, aliases and tokens are limited by strawberry's own extensions. Nested
listings multiply (`nodes(first: 1000) { allocations(first: 1000) }` could be
a million rows), so `QueryCost` estimates the number of objects an operation
may return, from each listing's `first` (or its default) along the nesting,
and refuses the operation above a budget. Page sizes beyond the allowed
maximum are counted at the maximum: the field itself refuses them, naming `first`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

from controlplane.api.errors import INVALID_QUERY

MAX_COST = 100_000
#: listings with a `first` argument: (default, maximum)
PAGED: dict[str, tuple[int, int]] = {
    "nodes": (100, 1_000),
    "allocations": (100, 1_000),
    "children": (100, 1_000),
    "traverse": (100, 1_000),
    "descendants": (10_000, 10_000),
    "events": (100, 10_000),
    "jobs": (100, 1_000),
}
#: other lists of objects, at a size they rarely exceed
LISTS: dict[str, int] = {
    "gpus": 16, "neighbors": 32, "ancestors": 32, "spawnAllocations": 100, "watchers": 16, "watching": 16,
    "tasks": 100, "runs": 4,
}


def operation_cost(
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
    paged: Mapping[str, tuple[int, int]] = PAGED,
) -> int:
    def first_of(field: FieldNode, default: int, maximum: int) -> int:
        for arg in field.arguments or ():
            if arg.name.value != "first":
                continue
            value: Any = None
            if isinstance(arg.value, IntValueNode):
                value = int(arg.value.value)
            elif isinstance(arg.value, VariableNode):
                value = variables.get(arg.value.name.value)
            if isinstance(value, int):
                return max(1, min(value, maximum))
        return default

    def cost(selection_set: SelectionSetNode | None, factor: int) -> int:
        total = 0
        for sel in selection_set.selections if selection_set else ():
            if isinstance(sel, FieldNode):
                if sel.selection_set is None:
                    continue
                name = sel.name.value
                if name in paged:
                    n = first_of(sel, *paged[name])
                else:
                    n = LISTS.get(name, 1)
                total += factor * n + cost(sel.selection_set, factor * n)
            elif isinstance(sel, InlineFragmentNode):
                total += cost(sel.selection_set, factor)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value in fragments:
                total += cost(fragments[sel.name.value].selection_set, factor)
        return total

    return cost(operation.selection_set, 1)


class QueryCost(SchemaExtension):
    """Refuses an operation whose estimated result exceeds `max_cost` objects."""

    def __init__(self, max_cost: int = MAX_COST, paged: Mapping[str, tuple[int, int]] = PAGED) -> None:
        self.max_cost = max_cost
        self.paged = paged

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if document is not None:
            fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            chosen = [o for o in operations if ctx.operation_name is None or (o.name and o.name.value == ctx.operation_name)]
            total = sum(operation_cost(o, fragments, ctx.variables or {}, self.paged) for o in chosen[:1])
            if total > self.max_cost:
                ctx.result = ExecutionResult(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"query too costly: it may return about {total} objects, at most {self.max_cost} are "
                            "allowed; ask for smaller pages (`first`) or nest fewer listings",
                            extensions={"code": INVALID_QUERY, "field": None},
                        )
                    ],
                )
        yield
