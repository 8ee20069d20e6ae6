"""`job`: the native root of a job. Unwraps the Job DAG into the allocation hierarchy.

On start and whenever allocations of the job end, it reads the job's tasks from
the graph with the allocations that ran them, derives each task's state, and
spawns the tasks whose needs have all succeeded: top-level tasks as its own
children, nested tasks as children of their parent task's allocation. Each task
is claimed (pending -> running) by one guarded write before it is spawned with
ids derived from the task, so concurrent or repeated events spawn it once. When a
task fails for good, the job fails saying which task, how it ended and how its
output ended; the tasks that had not finished end with it (`end_tasks`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.jobs.model import JOB_ACTIVE, JobState, TaskRecord, TaskState, at_job_end, derive, failure_summary
from controlplane.jobs.ports import JobStore
from controlplane.jobs.spec import JobSpec, TaskRow, TaskSpec, flatten
from controlplane.ports.native import NativeContext
from controlplane.ports.store import Hierarchy
from controlplane.services.ids import new_ids

log = logging.getLogger(__name__)
#: a task claimed but still without an allocation this long after: its spawn was lost
ORPHAN_AFTER_S = 30.0
#: failed tasks a job's error describes one by one (the rest are counted)
DESCRIBED_FAILURES = 3


def end_tasks(store: JobStore, job_id: str, now: float) -> None:
    """The job ended: every task that had not finished ends with it (`skipped` or `cancelled`, see at_job_end)."""
    tasks = store.job_tasks(job_id=job_id)
    store.set_task_states(changes=[(t.id, [t.state], end) for t in tasks if (end := at_job_end(t)) is not t.state], now=now)


@lru_cache(maxsize=64)
def _rows(job_id: str, spec_json: str) -> dict[str, TaskRow]:
    return {row.path: row for row in flatten(JobSpec.model_validate_json(spec_json))}


def allocation_spec(task: TaskSpec, *, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": task.name if task.replicas == 1 else f"{task.name}-{index}",
        "env": task.env,
        "resources": task.resources.model_dump(),
        "restart": task.restart.value,
        "node_labels": task.placement.node_labels,
    }
    if task.executor == "process":
        spec.update(executor="process", argv=task.argv)
    else:
        spec.update(executor="native", native=task.executor, config=task.config)
    if task.supervision is not None:
        spec["supervision"] = task.supervision.model_dump(mode="json")
    if task.placement.affinity is not None and task.placement.affinity.near_parent:
        spec["max_rtt_ms"] = task.placement.affinity.max_rtt_ms
    if task.placement.spread:
        spec["spread_key"] = task.name
    return spec


class JobExecutor:
    def __init__(self, store: JobStore, allocations: Hierarchy) -> None:
        self.store = store
        #: to read how the failed tasks' allocations ended
        self.allocations = allocations

    def validate(self, config: dict[str, Any]) -> None:
        return None

    def on_start(self, ctx: NativeContext) -> None:
        job_id = str(ctx.allocation.extra["root_of"])
        now = ctx.now()
        self.store.set_job_state(job_id=job_id, expected=[JobState.SUBMITTED], to=JobState.RUNNING, now=now,
                                 fields={"root_id": ctx.allocation.id, "started_at": now})
        self.advance(ctx)

    def on_children_ended(self, ctx: NativeContext, children: Sequence[AllocationRecord]) -> None:
        self.advance(ctx)

    def on_terminated(self, ctx: NativeContext, target: AllocationRecord) -> None:
        return None

    def advance(self, ctx: NativeContext) -> None:
        store, now = self.store, ctx.now()
        job_id = str(ctx.allocation.extra["root_of"])
        job = store.get_job(job_id=job_id)
        if job is None or job.state not in JOB_ACTIVE:
            return
        rows = _rows(job_id, job.spec_json)
        tasks = store.job_tasks(job_id=job_id)
        by_path = {t.path: t for t in tasks}
        states = {t.path: derive(t) for t in tasks}
        changed = [(t.id, [t.state], states[t.path]) for t in tasks if states[t.path] != t.state]
        store.set_task_states(changes=changed, now=now)
        failed = sorted(p for p, s in states.items() if s is TaskState.FAILED)
        if failed:
            why = self._why(failed, by_path)
            store.set_job_state(job_id=job_id, expected=JOB_ACTIVE, to=JobState.FAILED, now=now,
                                fields={"error": why, "finished_at": now})
            end_tasks(store, job_id, now)
            ctx.fail(f"job {job.name}: {why}")
            return
        if all(s is TaskState.SUCCEEDED for s in states.values()):
            store.set_job_state(job_id=job_id, expected=[JobState.RUNNING], to=JobState.SUCCEEDED, now=now,
                                fields={"finished_at": now})
            ctx.succeed(f"job {job.name}: all {len(tasks)} tasks succeeded")
            return
        ready = [
            t for t in tasks
            if states[t.path] is TaskState.PENDING
            and all(states.get(n) is TaskState.SUCCEEDED for n in rows[t.path].needs)
            and (t.parent_path is None or by_path[t.parent_path].runs)
        ]
        claimed = set(store.set_task_states(changes=[(t.id, [TaskState.PENDING], TaskState.RUNNING) for t in ready], now=now))
        # tasks claimed long ago whose spawn never happened (a crash in between): spawn again, idempotently
        orphaned = [t for t in tasks if t.state is TaskState.RUNNING and not t.runs and t.updated_at < now - ORPHAN_AFTER_S]
        fresh = [t for t in ready if t.id in claimed]
        by_parent: dict[str, list[TaskRecord]] = {}
        for t in fresh:
            by_parent.setdefault(self._parent_of(ctx, t, by_path), []).append(t)
        for parent_id, batch in by_parent.items():  # one atomic create per parent for all its ready tasks
            self._spawn(ctx, parent_id, batch, rows)
        for t in orphaned:  # rare: one at a time, so an already created one cannot fail a batch
            self._spawn(ctx, self._parent_of(ctx, t, by_path), [t], rows)
        if any(rows[t.path].spec.children for t in fresh + orphaned):
            self.advance(ctx)  # their nested children can start now that their parent allocations exist

    def _why(self, failed: Sequence[str], by_path: dict[str, TaskRecord]) -> str:
        """The failed tasks, each with its failing allocation, how it ended and the end of its output."""
        described = list(failed[:DESCRIBED_FAILURES])
        runs = {p: [r for r in by_path[p].runs if r.state in (State.FAILED, State.LOST, State.STOPPED) and not r.restart_pending]
                for p in described}
        records = {a.id: a for a in self.allocations.get_allocations(
            allocation_ids=[r.allocation_id for rs in runs.values() for r in rs])}
        parts = [failure_summary(p, [records[r.allocation_id] for r in runs[p] if r.allocation_id in records]) for p in described]
        if len(failed) > len(described):
            parts.append(f"{len(failed) - len(described)} more task(s) failed: {', '.join(failed[len(described):])}")
        return "; ".join(parts)

    @staticmethod
    def _parent_of(ctx: NativeContext, task: TaskRecord, by_path: dict[str, TaskRecord]) -> str:
        return ctx.allocation.id if task.parent_path is None else by_path[task.parent_path].runs[0].allocation_id

    def _spawn(self, ctx: NativeContext, parent_id: str, tasks: Sequence[TaskRecord], rows: dict[str, TaskRow]) -> None:
        specs: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        ids: list[str] = []
        for task in tasks:
            spec = rows[task.path].spec
            specs += [allocation_spec(spec, index=i) for i in range(task.replicas)]
            extra += [{"job_id": task.job_id, "task_id": task.id}] * task.replicas
            ids += new_ids(task.replicas, request_id=f"task:{task.id}", parent_id=parent_id)  # stable per task
        try:
            ctx.spawn(specs, parent_id=parent_id, extra=extra, ids=ids)
        except ControlPlaneError as exc:
            paths = ", ".join(t.path for t in tasks)
            log.warning("job %s: task(s) %s could not be spawned: %s", tasks[0].job_id, paths, exc)
            now = ctx.now()
            self.store.set_task_states(changes=[(t.id, [TaskState.RUNNING, TaskState.PENDING], TaskState.FAILED) for t in tasks],
                                       now=now)
            self.store.set_job_state(job_id=tasks[0].job_id, expected=[JobState.RUNNING], to=JobState.FAILED, now=now,
                                     fields={"error": f"task(s) {paths} could not start: {exc}", "finished_at": now})
            end_tasks(self.store, tasks[0].job_id, now)
            ctx.fail(f"task(s) {paths} could not start: {exc}")
