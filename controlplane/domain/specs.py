"""Validated inputs: what a caller may ask for when registering a node or spawning an allocation.

pydantic does the checking; `parse()` turns its errors into InvalidInput that
names the field ("spec.resources.cpu: ...").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane.domain.errors import InvalidInput
from controlplane.domain.resources import MAX_CPU_MILLI, MAX_GPUS, MAX_MEMORY_MIB, Resources
from controlplane.domain.supervision import RestartType, SupervisionPolicy

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[A-Za-z0-9._/-]{0,63}$")

Executor = Literal["process", "native"]
EXECUTORS: tuple[str, ...] = ("process", "native")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_labels(v: dict[str, str]) -> dict[str, str]:
    for k, val in v.items():
        if not LABEL_RE.match(f"{k}={val}"):
            raise ValueError(f"label {k!r}={val!r} must be key=value of letters, digits, '.', '_', '/', '-'")
    return v


class GpuSpec(_Spec):
    model: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]
    memory_mib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 0


class NodeSpec(_Spec):
    name: str
    cpu_milli: Annotated[int, Field(gt=0, le=MAX_CPU_MILLI)]
    memory_mib: Annotated[int, Field(gt=0, le=MAX_MEMORY_MIB)]
    labels: dict[str, str] = Field(default_factory=dict)
    gpus: list[GpuSpec] = Field(default_factory=list, max_length=MAX_GPUS)
    #: how this node supervises the allocations it creates (None: the default policy)
    supervision: SupervisionPolicy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)

    def label_list(self) -> tuple[str, ...]:
        return tuple(sorted(f"{k}={v}" for k, v in self.labels.items()))


class ResourceSpec(_Spec):
    cpu_milli: Annotated[int, Field(ge=0, le=MAX_CPU_MILLI)] = 100
    memory_mib: Annotated[int, Field(ge=0, le=MAX_MEMORY_MIB)] = 64
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS)] = 0
    gpu_model: Annotated[str | None, Field(min_length=1, max_length=64)] = None

    def to_resources(self) -> Resources:
        return Resources(self.cpu_milli, self.memory_mib, self.gpus, self.gpu_model)


class AllocationSpec(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    executor: Executor = "process"
    argv: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=1024)
    env: dict[str, str] = Field(default_factory=dict)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    node: str | None = None  # place on this node (by name) instead of the first that fits
    node_labels: dict[str, str] = Field(default_factory=dict)  # placement constraint
    grace_period_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    #: when this allocation is restarted by its parent
    restart: RestartType = RestartType.TRANSIENT
    #: how this allocation supervises the children it creates (None: the default policy)
    supervision: SupervisionPolicy | None = None
    #: for executor "native": which native executor runs it ("job", "replicas", a plugin's), and its configuration
    native: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    config: dict[str, Any] = Field(default_factory=dict)
    #: placement affinity: on the parent's node or a NEIGHBOR_OF node within this RTT
    max_rtt_ms: Annotated[float | None, Field(ge=0, le=600_000)] = None
    #: placement spread: prefer nodes holding the fewest allocations with the same key
    spread_key: Annotated[str | None, Field(min_length=1, max_length=200)] = None

    @field_validator("node_labels")
    @classmethod
    def _node_labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)

    def label_list(self) -> tuple[str, ...]:
        """The node labels this allocation needs, as the "key=value" strings nodes carry."""
        return tuple(sorted(f"{k}={v}" for k, v in self.node_labels.items()))

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ValueError(f"environment variable name {k!r} is not a valid identifier")
        return v

    def model_post_init(self, __context: Any) -> None:
        if self.executor == "process" and not self.argv:
            raise ValueError("argv: must not be empty for the process executor")
        if self.executor == "native" and not self.native:
            raise ValueError("native: name the native executor (for example 'job' or 'replicas')")


T = TypeVar("T", bound=BaseModel)


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix] if prefix else []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else str(p))
    return ".".join(parts).replace(".[", "[")


def _nested_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The fields of the model found at `loc` inside `model` (for errors raised by nested model validators)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return {}
        ann = info.annotation
        for arg in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
                break
        else:
            return {}
    return dict(getattr(current, "model_fields", {}))


def parse(model: type[T], data: Any, *, field: str) -> T:
    """Validate `data` as `model`; on failure raise InvalidInput naming the first offending field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = tuple(err["loc"])
        named = re.match(r"^([a-z_]+): (.*)$", msg, re.S)
        if named and named.group(1) in getattr(model, "model_fields", {}) | _nested_fields(model, loc):
            # a model-level check names its field first ("argv: must not be empty")
            msg, loc = named.group(2), (*loc, named.group(1))
        raise InvalidInput(msg, field=_loc(field, loc)) from None
