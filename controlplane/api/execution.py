"""GraphQL execution with plain leaf fields read inline: long lists of records stay cheap.

graphql-core spends a few microseconds per field on resolve-info, paths and
completion. For `descendants { id name state }` over a thousand allocations
that is most of the answer's time, though each of those fields only reads an
attribute of a record and serializes a scalar. This execution context does
exactly that, inline, for fields that are:

- strawberry "basic" fields (no resolver, no permission, no field extension),
- of a scalar or enum type (possibly non-null), without arguments,
- executed with no resolver middleware installed.

Every other field, and any object whose inline read finds something odd (a
null for a non-null field, a value the scalar refuses), goes through the
standard path, which also produces the standard located error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, cast

from graphql import GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, GraphQLResolveInfo, is_leaf_type
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

_BACKREF = GraphQLCoreConverter.DEFINITION_BACKREF


class _Leaf(NamedTuple):
    attribute: str
    coerce: Callable[[Any], Any]
    non_null: bool


class _Plan(NamedTuple):
    order: tuple[str, ...]
    leaves: dict[str, _Leaf]
    rest: GroupedFieldSet | None  # the fields that take the standard path, None when there are none


class InlineLeafExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        self._inline = not (manager and getattr(manager, "middlewares", None))
        #: per (type, field set): the plan, keeping the field set alive so its id is not reused
        self._plans: dict[tuple[int, int], tuple[GroupedFieldSet, _Plan | None]] = {}

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        plan = self._plan(parent_type, grouped_field_set) if self._inline else None
        leaves = _read(plan, source_value) if plan is not None else None
        if plan is None or leaves is None:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        if plan.rest is None:
            return leaves
        rest = super().execute_fields(parent_type, source_value, path, plan.rest, position_context)

        def merge(others: dict[str, Any]) -> dict[str, Any]:
            return {n: leaves[n] if n in leaves else others[n] for n in plan.order if n in leaves or n in others}

        if self.is_awaitable(rest):
            pending = cast(Awaitable[dict[str, Any]], rest)

            async def later() -> dict[str, Any]:
                return merge(await pending)

            return later()
        return merge(cast(dict[str, Any], rest))

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Iterable[Any],
        position_context: Any,
    ) -> Any:
        inline = self._inline_list(item_type, field_details_list, info, items) if self._inline else None
        if inline is None:
            return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)
        return inline

    def _inline_list(
        self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList, info: GraphQLResolveInfo[Any], items: Any
    ) -> list[dict[str, Any]] | None:
        """A list of objects whose selected fields are all inline leaves, without per-item machinery."""
        if not isinstance(items, (list, tuple)):
            return None
        object_type = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if not isinstance(object_type, GraphQLObjectType):
            return None
        grouped_field_set, defer_usages, forbidden = self.collect_subfields(object_type, field_details_list)
        plan = None if defer_usages or forbidden else self._plan(object_type, grouped_field_set)
        if plan is None or plan.rest is not None:
            return None
        is_type_of = object_type.is_type_of
        rows: list[dict[str, Any]] = []
        for item in items:
            if item is None or (is_type_of is not None and is_type_of(item, info) is not True):
                return None
            row = _read(plan, item)
            if row is None:
                return None
            rows.append(row)
        return rows

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet) -> _Plan | None:
        key = (id(parent_type), id(grouped_field_set))
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = (grouped_field_set, _make_plan(parent_type, grouped_field_set))
        return cached[1]


def _read(plan: _Plan, source: Any) -> dict[str, Any] | None:
    """The inline leaves of `source` in response order (other fields left out), or None if one is odd."""
    out: dict[str, Any] = {}
    try:
        for name, leaf in plan.leaves.items():
            value = getattr(source, leaf.attribute)
            if value is None:
                if leaf.non_null:
                    return None
                out[name] = None
                continue
            coerced = leaf.coerce(value)
            if coerced is None or coerced is Undefined:
                return None
            out[name] = coerced
    except Exception:  # noqa: BLE001 - the standard path finds and reports it
        return None
    return out


def _make_plan(parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet) -> _Plan | None:
    leaves: dict[str, _Leaf] = {}
    rest: GroupedFieldSet = {}
    for name, details in grouped_field_set.items():
        leaf = _leaf(parent_type, details)
        if leaf is None:
            rest[name] = details
        else:
            leaves[name] = leaf
    if not leaves:
        return None
    return _Plan(order=tuple(grouped_field_set), leaves=leaves, rest=rest or None)


def _leaf(parent_type: GraphQLObjectType, details: Any) -> _Leaf | None:
    node = details[0].node
    field_def = parent_type.fields.get(node.name.value)
    if field_def is None or node.arguments or field_def.args:
        return None
    definition = (field_def.extensions or {}).get(_BACKREF)
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    if not getattr(field_def.resolve, "_is_default", False) or definition.default_resolver is not getattr:
        return None
    gql_type = field_def.type
    non_null = isinstance(gql_type, GraphQLNonNull)
    named = gql_type.of_type if non_null else gql_type
    if not is_leaf_type(named):
        return None
    return _Leaf(attribute=definition.python_name, coerce=named.coerce_output_value, non_null=non_null)
