"""GraphQL types of jobs: the Job DAG as submitted, its tasks, and the allocations that ran each task.

Answered from the service's JobRecord, TaskRecord and TaskRun; relations to
allocations and nodes go through the request's loaders like everywhere else.
"""

from __future__ import annotations

import json
from typing import Any, cast

import strawberry
from strawberry import Parent
from strawberry.scalars import JSON

from controlplane.api.access import HIDDEN, sees_secrets
from controlplane.api.context import Info
from controlplane.api.types import Allocation, Node, maybe_await
from controlplane.jobs.model import JobRecord, TaskRecord
from controlplane.jobs.model import TaskRun as TaskRunRecord


@strawberry.type(description="One allocation that executes a task: which incarnation, where, how it stands.")
class TaskRun:
    incarnation: int
    state: str
    restart_pending: bool = strawberry.field(description="Its supervisor decided a restart that waits for its backoff.")

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, TaskRunRecord))

    @strawberry.field
    async def allocation(self, root: Parent[TaskRunRecord], info: Info) -> Allocation:
        return cast(Allocation, await maybe_await(info.context.actor(root.allocation_id)))

    @strawberry.field(description="The node it runs on; null before it is placed.")
    def node(self, root: Parent[TaskRunRecord], info: Info) -> Node | None:
        return cast(Node, info.context.node(root.node_id)) if root.node_id else None


@strawberry.type(description="A task of a job: a node of the job's DAG, possibly with nested child tasks (`parentPath`).")
class Task:
    id: strawberry.ID
    path: str = strawberry.field(description='Its place in the job, e.g. "train/worker".')
    name: str
    parent_path: str | None = strawberry.field(description="The task whose allocation spawns this one's, if nested.")
    state: str = strawberry.field(
        description="`pending`, `running`, `succeeded`, `failed`; once its job has ended, a task that had not finished "
        "is `cancelled` (its allocations were stopped) or `skipped` (it never started)."
    )
    replicas: int
    executor: str
    runs: list[TaskRun] = strawberry.field(description="The allocations that execute it, one per replica.")

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, TaskRecord))

    @strawberry.field(description="Paths of the sibling tasks it waits for (DEPENDS_ON).")
    def needs(self, root: Parent[TaskRecord]) -> list[str]:
        return [str(n) for n in json.loads(root.spec_json or "{}").get("needs", [])]


@strawberry.type(description="A submitted job: a DAG of tasks unwrapped under a native `job` root allocation.")
class Job:
    id: strawberry.ID
    name: str
    state: str = strawberry.field(description="`submitted`, `running`, `succeeded`, `failed` or `cancelled`.")
    submitted_at: float = strawberry.field(description="Unix time, in seconds.")
    updated_at: float
    error: str | None = strawberry.field(
        description="Why it failed: the failing task, its allocation, how it ended (exit code or signal) and the end "
        "of its output; or why a task could not start."
    )
    tasks_total: int

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (cls, JobRecord))

    @strawberry.field(description="The spec as accepted, with the control plane's defaults filled in (snake_case keys); "
                      "env values hidden from callers who may not spawn there.")
    async def spec(self, root: Parent[JobRecord], info: Info) -> JSON:
        spec = json.loads(root.spec_json)
        if not await sees_secrets(info.context, root.root_id or root.submitted_by):
            spec = _hide_env(spec)
        return cast(JSON, spec)

    @strawberry.field(description="The node it was submitted from: the parent of its root.")
    def submitted_by(self, root: Parent[JobRecord], info: Info) -> Node:
        return cast(Node, info.context.node(root.submitted_by))

    @strawberry.field(name="root", description="The native allocation that orchestrates it; its tasks' allocations are below it.")
    async def root_allocation(self, root: Parent[JobRecord], info: Info) -> Allocation | None:
        return cast(Allocation, await maybe_await(info.context.actor(root.root_id))) if root.root_id else None

    @strawberry.field(description="Every task, parents and needs before the tasks that refer to them.")
    async def tasks(self, root: Parent[JobRecord], info: Info) -> list[Task]:
        return cast(list[Task], await info.context.call(info.context.control.jobs.tasks, root.id))


def _hide_env(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ({e: HIDDEN for e in v} if k == "env" and isinstance(v, dict) else _hide_env(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_env(v) for v in value]
    return value
