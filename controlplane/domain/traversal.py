"""A generic semantic traversal: from a vertex, over typed edges, in a direction, to a depth, with filters.

The spec is validated here against the vocabulary and the string rule of
domain/text.py (the start and the cursor are ids, a filter's text values free
text); each engine adapter compiles it to its own query language with every
value as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from controlplane.domain.errors import InvalidInput
from controlplane.domain.text import Id, Text
from controlplane.domain.vocabulary import ALL_FILTERABLE, Direction, EdgeType, Label

MAX_TRAVERSAL_DEPTH = 10
MAX_TRAVERSAL_ROWS = 1000
#: a text value a filter compares with
FILTER_TEXT = Text(max_length=4096)
MAX_FILTER_VALUES = 1000


class Op(str, Enum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"  # property value is one of the given list
    CONTAINS = "contains"  # list property contains the given value


@dataclass(frozen=True, slots=True)
class Filter:
    property: str
    op: Op
    value: Any


@dataclass(frozen=True, slots=True)
class TraversalSpec:
    start_id: str
    edge_types: tuple[EdgeType, ...]
    direction: Direction = Direction.OUT
    max_depth: int = 1
    min_depth: int = 1
    filters: tuple[Filter, ...] = ()
    target_label: Label | None = None
    limit: int = 100
    after: str | None = None  # cursor: ids strictly greater than this
    start_label: Label | None = field(default=None, compare=False)  # resolved by the service


def _enum(cls: type[Enum], value: Any, field_name: str) -> Any:
    if isinstance(value, cls):
        return value
    for member in cls:  # accept names (PARENT_OF) and values (out)
        if value in (member.value, member.name):
            return member
    allowed = ", ".join(str(m.value) for m in cls)
    raise InvalidInput(f"unknown value {value!r}; expected one of {allowed}", field=field_name)


def build_traversal(
    *,
    start_id: str,
    edge_types: list[str],
    direction: str = "out",
    max_depth: int = 1,
    min_depth: int = 1,
    filters: list[tuple[str, str, Any]] | None = None,
    target_label: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> TraversalSpec:
    Id("from").check(start_id)
    Id("after").check(after)
    if not edge_types:
        raise InvalidInput("name at least one edge type", field="edgeTypes")
    types = tuple(dict.fromkeys(_enum(EdgeType, t, f"edgeTypes[{i}]") for i, t in enumerate(edge_types)))
    if not 1 <= max_depth <= MAX_TRAVERSAL_DEPTH:
        raise InvalidInput(f"must be between 1 and {MAX_TRAVERSAL_DEPTH}", field="maxDepth")
    if not 0 <= min_depth <= max_depth:
        raise InvalidInput("must be between 0 and maxDepth", field="minDepth")
    if not 1 <= limit <= MAX_TRAVERSAL_ROWS:
        raise InvalidInput(f"must be between 1 and {MAX_TRAVERSAL_ROWS}", field="first")
    parsed: list[Filter] = []
    for i, (prop, op, value) in enumerate(filters or []):
        if prop not in ALL_FILTERABLE:
            raise InvalidInput(
                f"cannot filter on {prop!r}; filterable properties: {', '.join(sorted(ALL_FILTERABLE))}",
                field=f"where[{i}].property",
            )
        o = _enum(Op, op, f"where[{i}].op")
        if o is Op.IN and not isinstance(value, list):
            raise InvalidInput("'in' needs a list value", field=f"where[{i}].value")
        if isinstance(value, (dict,)) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
            raise InvalidInput("must be a scalar or a list of scalars", field=f"where[{i}].value")
        if isinstance(value, list) and len(value) > MAX_FILTER_VALUES:
            raise InvalidInput(f"at most {MAX_FILTER_VALUES} values", field=f"where[{i}].value")
        for j, text in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(text, str):
                FILTER_TEXT.check(text, field=f"where[{i}].value[{j}]" if isinstance(value, list) else f"where[{i}].value")
        parsed.append(Filter(prop, o, value))
    return TraversalSpec(
        start_id=start_id,
        edge_types=types,
        direction=_enum(Direction, direction, "direction"),
        max_depth=max_depth,
        min_depth=min_depth,
        filters=tuple(parsed),
        target_label=_enum(Label, target_label, "label") if target_label else None,
        limit=limit,
        after=after,
    )
