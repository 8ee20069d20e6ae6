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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.domain.specs import ResourceSpec, parse
from controlplane.domain.supervision import RestartType, SupervisionPolicy

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
MAX_TASKS = 20_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Affinity(_Model):
    """Place near the parent's node: on it, or on a NEIGHBOR_OF node within max_rtt_ms."""

    near_parent: bool = True
    max_rtt_ms: Annotated[float, Field(ge=0, le=600_000)] = 10.0


class Placement(_Model):
    node_labels: dict[str, str] = Field(default_factory=dict)
    affinity: Affinity | None = None
    #: spread the replicas of a task over as many nodes as possible
    spread: bool = False


class TaskSpec(_Model):
    name: Annotated[str, Field(pattern=TASK_NAME)]
    #: "process", or the name of a native executor ("job", "replicas", or a plugin's)
    executor: Annotated[str, Field(min_length=1, max_length=64)] = "process"
    argv: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=1024)
    env: dict[str, str] = Field(default_factory=dict)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    replicas: Annotated[int, Field(ge=1, le=10_000)] = 1
    needs: list[str] = Field(default_factory=list)
    restart: RestartType = RestartType.TRANSIENT
    supervision: SupervisionPolicy | None = None
    #: configuration of a native executor
    config: dict[str, Any] = Field(default_factory=dict)
    placement: Placement = Field(default_factory=Placement)
    #: this task's own sub-hierarchy: spawned with the task's allocation as their parent
    children: list[TaskSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> TaskSpec:
        if self.executor == "process" and not self.argv:
            raise ValueError("argv: must not be empty for the process executor")
        _check_level(self.children, "children")
        return self


class JobSpec(_Model):
    name: Annotated[str, Field(pattern=TASK_NAME)]
    tasks: list[TaskSpec] = Field(min_length=1)
    #: how the job's root supervises its tasks
    supervision: SupervisionPolicy | None = None

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
