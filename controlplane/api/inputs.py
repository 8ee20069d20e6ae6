"""GraphQL input types, and their translation to the spec dicts the domain validates.

GraphQL spells fields in camelCase (`cpuMilli`); the domain's specs in
snake_case (`cpu_milli`). Inputs become plain dicts with omitted fields left
out, so the domain's defaults and its validation (which names the offending
field) stay the single source of truth. `graphql_field` turns a field path in
a domain error back into the GraphQL spelling.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types.base import get_object_definition
from strawberry.utils.str_converters import to_camel_case

from controlplane.api.types import FilterOp


@strawberry.input(description="A GPU a node offers.")
class GpuInput:
    model: str
    memory_mib: int | None = strawberry.UNSET


@strawberry.input(description="A machine to register (again). cpu in millicores, memory in MiB.")
class NodeInput:
    name: str
    cpu_milli: int
    memory_mib: int
    labels: JSON | None = strawberry.field(default=strawberry.UNSET, description='Labels as an object, e.g. {"zone": "eu"}.')
    gpus: list[GpuInput] | None = strawberry.UNSET


@strawberry.input(description="What an allocation reserves on its node. cpu in millicores, memory in MiB.")
class ResourcesInput:
    cpu_milli: int | None = strawberry.UNSET
    memory_mib: int | None = strawberry.UNSET
    gpus: int | None = strawberry.UNSET
    gpu_model: str | None = strawberry.UNSET


@strawberry.input(description="An allocation to create. Omitted fields take the control plane's defaults.")
class AllocationSpecInput:
    name: str
    executor: str | None = strawberry.field(default=strawberry.UNSET, description="`process` (default) or `native`.")
    argv: list[str] | None = strawberry.UNSET
    env: JSON | None = strawberry.field(default=strawberry.UNSET, description="Environment variables as an object.")
    resources: ResourcesInput | None = strawberry.UNSET
    node: str | None = strawberry.field(default=strawberry.UNSET, description="Place on this node instead of the first that fits.")
    node_labels: JSON | None = strawberry.field(default=strawberry.UNSET, description="Only nodes with these labels.")
    require_isolation: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Only nodes whose agent enforces the reservation with cgroups (label isolation=cgroup)."
    )
    grace_period_s: float | None = strawberry.UNSET
    restart: str | None = strawberry.field(
        default=strawberry.UNSET, description="When its parent restarts it: `permanent`, `transient` (default) or `temporary`."
    )
    supervision: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="How it supervises its children: strategy, deciders, default_directive, max_restarts, window_s, "
        "backoff, child_policy (snake_case keys, as in the control plane's SupervisionPolicy).",
    )
    native: str | None = strawberry.field(
        default=strawberry.UNSET, description="For executor `native`: which one runs it (`job`, `replicas`, a plugin's)."
    )
    config: JSON | None = strawberry.field(default=strawberry.UNSET, description="For executor `native`: its configuration.")


@strawberry.input(description="A traversal filter on a property of the vertices reached.")
class Filter:
    property: str
    op: FilterOp = FilterOp.EQ
    value: JSON | None = None


def to_spec(value: Any) -> Any:
    """An input object as the snake_case dict a domain spec accepts, without the fields left out."""
    if isinstance(value, list):
        return [to_spec(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_spec(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not strawberry.UNSET
        }
    return value


def _input_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for cls in (GpuInput, NodeInput, ResourcesInput, AllocationSpecInput, Filter):
        definition = get_object_definition(cls, strict=True)
        for f in definition.fields:
            names[f.python_name] = f.graphql_name or to_camel_case(f.python_name)
    return names


_NAMES = _input_names()
_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(.*)$")


def graphql_field(path: str | None) -> str | None:
    """`spec.resources.cpu_milli` -> `spec.resources.cpuMilli`; segments that are not input fields stay as they are."""
    if not path:
        return path
    out = []
    for segment in path.split("."):
        m = _SEGMENT.match(segment)
        out.append(_NAMES.get(m.group(1), m.group(1)) + m.group(2) if m else segment)
    return ".".join(out)
