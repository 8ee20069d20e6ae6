"""A job spec: a DAG of tasks (with nested children) to unwrap into the allocation hierarchy.

The spec is validated here (pydantic, JSON Schema exported by `job_json_schema`):
task names unique per level, `needs` naming existing siblings, no cycles. What
the cluster can offer (resources, GPU models) is checked by the service at
submit, against the nodes of the graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.domain.specs import ENV_VALUE, ResourceSpec, check_env, check_labels, parse
from controlplane.domain.supervision import RestartType, SupervisionPolicy
from controlplane.domain.text import Json, Line, Text

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
MAX_TASKS = 20_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Affinity(_Model):
    """Place near the parent's node: on it, or on a NEIGHBOR_OF node within max_rtt_ms."""

    near_parent: bool = True
    max_rtt_ms: Annotated[float, Field(ge=0, le=600_000, description="in milliseconds")] = 10.0


class Placement(_Model):
    """Where a task's allocations may go."""

    node_labels: dict[str, str] = Field(default_factory=dict, description='only nodes with these labels, e.g. {"zone": "eu"}')
    affinity: Affinity | None = None
    spread: bool = Field(default=False, description="spread the replicas of a task over as many nodes as possible")

    @field_validator("node_labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        return check_labels(v)


class TaskSpec(_Model):
    """A task of a job: one or more allocations, after the sibling tasks it needs, with its own child tasks."""

    name: Annotated[str, Field(pattern=TASK_NAME)]
    executor: Annotated[str, Line(min_length=1, max_length=64),
                        Field(description="process, or the name of a native executor (job, replicas, a plugin's)")] = "process"
    argv: list[Annotated[str, Text(max_length=4096)]] = Field(default_factory=list, max_length=1024,
                                                              description="the command, for executor process")
    env: dict[str, Annotated[str, ENV_VALUE]] = Field(default_factory=dict, description='environment variables, e.g. {"A": "1"}')
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    replicas: Annotated[int, Field(ge=1, le=10_000, description="how many identical allocations run it")] = 1
    needs: list[Annotated[str, Line(max_length=63)]] = Field(default_factory=list,
                                                             description="names of sibling tasks that must succeed first")
    restart: RestartType = Field(default=RestartType.TRANSIENT, description="when its parent restarts it")
    supervision: SupervisionPolicy | None = Field(default=None, description="how it supervises its child tasks (null: the default)")
    config: Annotated[dict[str, Any], Json()] = Field(default_factory=dict, description="configuration of a native executor")
    placement: Placement = Field(default_factory=Placement)
    children: list[TaskSpec] = Field(default_factory=list, description="its own sub-hierarchy: spawned with "
                                                                       "this task's allocation as their parent")

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        return check_env(v)

    @model_validator(mode="after")
    def _shape(self) -> TaskSpec:
        if self.executor == "process" and not self.argv:
            raise ValueError("argv: must not be empty for the process executor")
        _check_level(self.children, "children")
        return self


class JobSpec(_Model):
    """A job: a DAG of tasks (each after the tasks it `needs`) unwrapped into the hierarchy under a native job root."""

    name: Annotated[str, Field(pattern=TASK_NAME)]
    tasks: list[TaskSpec] = Field(min_length=1)
    supervision: SupervisionPolicy | None = Field(default=None, description="how the job's root supervises its tasks (null: the default)")

    @model_validator(mode="after")
    def _dag(self) -> JobSpec:
        _check_level(self.tasks, "tasks")
        total = sum(1 for _ in walk(self.tasks))
        if total > MAX_TASKS:
            raise ValueError(f"tasks: at most {MAX_TASKS} tasks in one job (got {total})")
        return self


def _check_level(tasks: Sequence[TaskSpec], where: str) -> None:
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: task names must be unique; repeated: {', '.join(dupes)}")
    known = set(names)
    missing = sorted({f"{t.name} -> {n}" for t in tasks for n in t.needs if n not in known})
    if missing:
        raise ValueError(f"{where}: needs names a task that does not exist: {', '.join(missing)}")
    cycle = find_cycle({t.name: list(t.needs) for t in tasks})
    if cycle:
        raise ValueError(f"{where}: the needs form a cycle: {' -> '.join(cycle)}")


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the dependency graph, as a path that ends where it starts, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            if colour.get(nxt) == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt) == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(graph[nxt])))
                path.append(nxt)
    return None


def walk(tasks: Sequence[TaskSpec], prefix: str = "") -> Iterator[tuple[str, TaskSpec, str | None]]:
    """Every task with its path ("train/worker") and the path of the task it is a child of."""
    for t in tasks:
        path = f"{prefix}/{t.name}" if prefix else t.name
        yield path, t, prefix or None
        yield from walk(t.children, path)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as stored in the graph."""

    path: str
    name: str
    parent_path: str | None
    needs: tuple[str, ...]  # paths of the sibling tasks it depends on
    replicas: int
    spec: TaskSpec


def flatten(job: JobSpec) -> list[TaskRow]:
    rows = []
    for path, t, parent in walk(job.tasks):
        sibling = f"{parent}/" if parent else ""
        rows.append(TaskRow(path, t.name, parent, tuple(f"{sibling}{n}" for n in t.needs), t.replicas, t))
    return rows


def job_json_schema() -> dict[str, Any]:
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "controlplane job"
    return schema


def parse_job(data: Any) -> JobSpec:
    return parse(JobSpec, data, field="job")
