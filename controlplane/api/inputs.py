"""GraphQL input types, and their translation to the spec dicts the domain validates.

The specs a client writes (allocations, supervision policies, jobs) are
generated from the domain's pydantic models (model_inputs.py), with enums for
strategy, directive, restart type, child policy, decider `on` and executor; the
few inputs that have no model of their own are written here. GraphQL spells
fields in camelCase (`cpuMilli`); the domain's specs in snake_case
(`cpu_milli`). Inputs become plain dicts (enum members as their values, fields
left out when omitted), so the domain's validation (which names the offending
field) stays the single source of truth. `graphql_field` turns a field path in
a domain error back into the GraphQL spelling.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import TYPE_CHECKING, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types.base import get_object_definition
from strawberry.utils.str_converters import to_camel_case

from controlplane.api.model_inputs import EnumSpec, InputTypes
from controlplane.api.types import FilterOp
from controlplane.domain.specs import AllocationSpec, ResourceSpec
from controlplane.domain.supervision import Backoff, ChildPolicy, DeciderRule, Directive, RestartType, Strategy, SupervisionPolicy
from controlplane.jobs.spec import Affinity, JobSpec, Placement, TaskSpec


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


SPECS = InputTypes(
    names={
        AllocationSpec: "AllocationSpecInput", ResourceSpec: "ResourcesInput",
        SupervisionPolicy: "SupervisionPolicyInput", DeciderRule: "DeciderRuleInput", Backoff: "BackoffInput",
        JobSpec: "JobSpecInput", TaskSpec: "TaskSpecInput", Placement: "PlacementInput", Affinity: "AffinityInput",
    },
    enums={
        Strategy: EnumSpec("SupervisionStrategy", "Which children a parent restarts when one of them fails, as in OTP.", {
            "one_for_one": "Only the failed child.",
            "one_for_all": "Every child, the failed one and its live siblings.",
            "rest_for_one": "The failed child and the siblings created after it.",
        }),
        Directive: EnumSpec("SupervisionDirective", "What a parent does about a failed child.", {
            "restart": "Start a new incarnation (subject to the restart type, intensity and backoff).",
            "resume": "Leave it as it is: no restart, no escalation; its subtree lives on.",
            "stop": "Leave it ended and stop its subtree.",
            "escalate": "The parent fails; its own parent decides.",
        }),
        RestartType: EnumSpec("RestartType", "When a parent restarts this child.", {
            "permanent": "Always, even after a normal exit (services).",
            "transient": "Only after an abnormal exit (the default: batch work).",
            "temporary": "Never.",
        }),
        ChildPolicy: EnumSpec("ChildPolicy", "What happens to the children when their parent ends.", {
            "cascade": "They are stopped, children first.",
            "abandon": "They live on, marked as orphans.",
        }),
        (DeciderRule, "on"): EnumSpec("FailureKindMatch", "Which failures a decider rule is about.", {
            "exit": "A non-zero exit code.", "signal": "Killed by a signal.",
            "oom_killed": "Killed by the kernel for going past its memory limit.", "error": "Could not start.",
            "lost": "Its node was lost.", "escalated": "A child of it escalated.", "any": "Every failure.",
        }),
        (AllocationSpec, "executor"): EnumSpec("Executor", "What runs an allocation.", {
            "process": "A real subprocess on its node.", "native": "Orchestration code in the control plane (see `native`).",
        }),
    },
    enum_note="Its values are spelled as in job files and policies (lower-case), unlike the UPPER_CASE enums of "
    "this schema that exist only in the API.",
)

if TYPE_CHECKING:  # generated at import time; to the type checker they are opaque input objects
    AllocationSpecInput = Any
    SupervisionPolicyInput = Any
    JobSpecInput = Any
else:
    AllocationSpecInput = SPECS.input_type(AllocationSpec)
    SupervisionPolicyInput = SPECS.input_type(SupervisionPolicy)
    JobSpecInput = SPECS.input_type(JobSpec)


@strawberry.input(description="A traversal filter on a property of the vertices reached.")
class Filter:
    property: str
    op: FilterOp = FilterOp.EQ
    value: JSON | None = None


def to_spec(value: Any) -> Any:
    """An input object as the snake_case dict a domain spec accepts, without the fields left out."""
    if isinstance(value, list):
        return [to_spec(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_spec(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not strawberry.UNSET
        }
    return value


def _input_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for cls in (GpuInput, NodeInput, Filter, *SPECS.generated()):
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
