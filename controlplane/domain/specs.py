"""Validated inputs: what a caller may ask for when registering a node or spawning an allocation.

pydantic does the checking; `parse()` turns its errors into InvalidInput that
names the field ("spec.resources.cpu: ..."). Every string is also held to the
one rule of domain/text.py (ids, one-line names, free text), so nothing an
engine cannot carry gets past a spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane.domain.errors import InvalidInput
from controlplane.domain.resources import MAX_CPU_MILLI, MAX_GPUS, MAX_MEMORY_MIB, Resources
from controlplane.domain.supervision import RestartType, SupervisionPolicy
from controlplane.domain.text import Id, Json, Line, Text, check_mapping

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[A-Za-z0-9._/-]{0,63}$")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: an environment variable's value: free text (a process's environment cannot hold a NUL)
ENV_VALUE = Text(max_length=32_768)

Executor = Literal["process", "native"]
EXECUTORS: tuple[str, ...] = ("process", "native")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _string_map(v: Any) -> bool:
    """A map of strings to strings; anything else is left to pydantic, whose error says what is wrong."""
    return isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def check_labels(v: Any) -> Any:
    """Node labels (a validator before pydantic's own, so that a bad character is named as such)."""
    if not _string_map(v):
        return v
    check_mapping(v, keys=Line(max_length=64), values=Line(max_length=64), what="label")
    for k, val in v.items():
        if not LABEL_RE.fullmatch(f"{k}={val}"):
            raise ValueError(f"label {k!r}={val!r} must be key=value of letters, digits, '.', '_', '/', '-'")
    return v


def check_env(v: Any) -> Any:
    """Environment variables: names are identifiers, values free text (a validator before pydantic's own)."""
    if not _string_map(v):
        return v
    check_mapping(v, keys=Line(max_length=256), values=ENV_VALUE, what="environment variable")
    for k in v:
        if not ENV_NAME_RE.fullmatch(k):
            raise ValueError(f"environment variable name {k[:40]!r} is not a valid identifier")
    return v


class GpuSpec(_Spec):
    model: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]
    memory_mib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 0
    #: the device as the node agent found it (nvidia-smi): what it gives a process that claims this GPU
    uuid: Annotated[str | None, Field(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")] = None
    index: Annotated[int | None, Field(ge=0, le=1024)] = None


#: the node label an agent sets from what it enforces, and that `require_isolation` asks for
ISOLATION_LABEL = "isolation"
ISOLATION_ENFORCED = "cgroup"


class NodeSpec(_Spec):
    name: str
    cpu_milli: Annotated[int, Field(gt=0, le=MAX_CPU_MILLI)]
    memory_mib: Annotated[int, Field(gt=0, le=MAX_MEMORY_MIB)]
    labels: dict[str, str] = Field(default_factory=dict)
    gpus: list[GpuSpec] = Field(default_factory=list, max_length=MAX_GPUS)
    #: how this node supervises the allocations it creates (None: the default policy)
    supervision: SupervisionPolicy | None = None
    #: what its agent enforces on allocations: cgroup limits, or none (None: not reported)
    isolation: Literal["cgroup", "none"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        return check_labels(v)

    def label_list(self) -> tuple[str, ...]:
        """The labels, with `isolation=` set by what the agent reported (a label of that name is not the caller's to set)."""
        labels = {k: v for k, v in self.labels.items() if self.isolation is None or k != ISOLATION_LABEL}
        if self.isolation is not None:
            labels[ISOLATION_LABEL] = self.isolation
        return tuple(sorted(f"{k}={v}" for k, v in labels.items()))


class ResourceSpec(_Spec):
    """What an allocation reserves on its node."""

    cpu_milli: Annotated[int, Field(ge=0, le=MAX_CPU_MILLI, description="CPU in millicores")] = 100
    memory_mib: Annotated[int, Field(ge=0, le=MAX_MEMORY_MIB, description="memory in MiB")] = 64
    gpus: Annotated[int, Field(ge=0, le=MAX_GPUS, description="GPUs claimed exclusively")] = 0
    gpu_model: Annotated[str | None, Line(min_length=1, max_length=64), Field(description="only GPUs of this model")] = None

    def to_resources(self) -> Resources:
        return Resources(self.cpu_milli, self.memory_mib, self.gpus, self.gpu_model)


class AllocationSpec(_Spec):
    """An allocation to create. Omitted fields take the control plane's defaults."""

    name: Annotated[str, Line(min_length=1, max_length=200)]
    executor: Executor = "process"
    argv: list[Annotated[str, Text(max_length=4096)]] = Field(default_factory=list, max_length=1024,
                                                              description="the command, for executor process")
    env: dict[str, Annotated[str, ENV_VALUE]] = Field(default_factory=dict, description='environment variables, e.g. {"A": "1"}')
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    node: Annotated[str | None, Id(), Field(description="place on this node instead of the first that fits")] = None
    node_labels: dict[str, str] = Field(default_factory=dict, description='only nodes with these labels, e.g. {"zone": "eu"}')
    grace_period_s: Annotated[float, Field(ge=0, le=3600, description="a stop kills it this long after asking")] = 10.0
    restart: RestartType = Field(default=RestartType.TRANSIENT, description="when its parent restarts it")
    supervision: SupervisionPolicy | None = Field(default=None, description="how it supervises its children (null: the default policy)")
    native: Annotated[str | None, Line(min_length=1, max_length=64),
                      Field(description="for executor native: which one runs it (job, replicas, a plugin's)")] = None
    config: Annotated[dict[str, Any], Json()] = Field(default_factory=dict, description="for executor native: its configuration")
    max_rtt_ms: Annotated[float | None, Field(ge=0, le=600_000, description="affinity: on its parent's node or a "
                                                                            "NEIGHBOR_OF node within this RTT")] = None
    spread_key: Annotated[str | None, Line(min_length=1, max_length=200),
                          Field(description="spread: prefer nodes with the fewest allocations of this key")] = None
    require_isolation: bool = Field(default=False, description="only nodes whose agent enforces its limits "
                                                               "(label isolation=cgroup)")

    @field_validator("node_labels", mode="before")
    @classmethod
    def _node_labels(cls, v: Any) -> Any:
        return check_labels(v)

    def label_list(self) -> tuple[str, ...]:
        """The node labels this allocation needs, as the "key=value" strings nodes carry (isolation=cgroup when it
        requires isolation): what it is placed by, stored with it, and placed by again on every restart."""
        labels = dict(self.node_labels)
        if self.require_isolation:
            labels[ISOLATION_LABEL] = ISOLATION_ENFORCED
        return tuple(sorted(f"{k}={v}" for k, v in labels.items()))

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return check_env(v)

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
