"""The job store on a Gremlin Server: the Job DAG (Job, Task, HAS_TASK, DEPENDS_ON) and the GPU inventory.

The Gremlin counterpart of jobs/cypher.py, over the GremlinStore's connection. Same
rules as graph_schema/gremlin/writes.py: one traversal per state change with its
precondition inside, values as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import P

from controlplane.domain.vocabulary import EdgeType, Label
from controlplane.jobs.model import JobRecord, JobState, TaskRecord, TaskState
from controlplane.jobs.ports import NewTask
from graph_schema.gremlin.remote import Remote, props_of
from graph_schema.gremlin.steps import A, having, set_props, vertex_map

JOB = Label.JOB.value
TASK = Label.TASK.value
HAS_TASK = EdgeType.HAS_TASK.value
DEPENDS_ON = EdgeType.DEPENDS_ON.value
EXECUTES = EdgeType.EXECUTES.value


class GremlinJobStore:
    def __init__(self, remote: Remote) -> None:
        self._remote = remote

    def create_job(
        self, *, job_id: str, name: str, spec_json: str, node_id: str, tasks: Sequence[NewTask], root_id: str, now: float
    ) -> JobRecord:
        job = {
            "id": job_id, "name": name, "state": JobState.SUBMITTED.value, "spec": spec_json, "submitted_at": now,
            "updated_at": now, "submitted_by": node_id, "tasks_total": len(tasks), "root_id": root_id,
        }
        m = self._remote.one(lambda g: _create_job(g, job, tasks))
        return JobRecord.from_props(props_of(m))

    def get_job(self, *, job_id: str) -> JobRecord | None:
        m = self._remote.one(lambda g: g.V(job_id).has_label(JOB).element_map(), write=False)
        return JobRecord.from_props(props_of(m)) if m else None

    def list_jobs(self, *, after: str | None, limit: int, state: JobState | None = None) -> list[JobRecord]:
        def build(g: Any) -> GraphTraversal:
            t = having(g, JOB, "state", [state.value]) if state is not None else g.V().has_label(JOB)
            if after is not None:
                t = t.has("id", P.gt(after))
            return t.order().by("id").limit(int(limit)).element_map()

        return [JobRecord.from_props(props_of(m)) for m in self._remote.run(build, write=False)]

    def job_tasks(self, *, job_id: str) -> list[TaskRecord]:
        run = __.project("id", "incarnation", "state", "node_id", "restart_at").by("id").by("incarnation").by(
            "state").by("node_id").by(__.values("restart_at").fold())
        rows = self._remote.run(
            lambda g: having(g, TASK, "job_id", [job_id]).order().by("seq")
            .project("t", "runs").by(__.element_map()).by(__.in_(EXECUTES).has_label(A).map(run).fold()),
            write=False,
        )
        return [
            TaskRecord.from_props(
                props_of(r["t"]),
                [[x["id"], x["incarnation"], x["state"], x["node_id"], (x["restart_at"] or [None])[0]] for x in r["runs"]],
            )
            for r in rows
        ]

    def set_task_states(self, *, changes: Sequence[tuple[str, Sequence[TaskState], TaskState]], now: float) -> list[str]:
        if not changes:
            return []

        def build(g: Any) -> GraphTraversal:
            t = g.inject(0).project(*[f"c{i}" for i in range(len(changes))])
            for task_id, expected, to in changes:
                moved = __.V(task_id).has_label(TASK).has("state", P.within([e.value for e in expected]))
                t = t.by(moved.property("state", to.value).property("updated_at", now).values("id").fold())
            return t

        r = self._remote.one(build)
        return [x for i in range(len(changes)) for x in r[f"c{i}"]]

    def set_job_state(
        self, *, job_id: str, expected: Sequence[JobState], to: JobState, now: float, fields: dict[str, Any] | None = None
    ) -> JobRecord | None:
        def build(g: Any) -> GraphTraversal:
            t = g.V(job_id).has_label(JOB).has("state", P.within([e.value for e in expected]))
            t = t.property("state", to.value).property("updated_at", now)
            return set_props(t, fields or {}, drop_none=True).element_map()

        m = self._remote.one(build)
        return JobRecord.from_props(props_of(m)) if m else None


def _create_job(g: Any, job: dict[str, Any], tasks: Sequence[NewTask]) -> GraphTraversal:
    """The Job, its Tasks, HAS_TASK and DEPENDS_ON; a repeat (the job id exists) changes nothing."""
    task_maps = [
        vertex_map(TASK, {
            "id": t.id, "job_id": job["id"], "path": t.path, "name": t.name, "parent_path": _parent_path(t),
            "state": TaskState.PENDING.value, "replicas": t.replicas, "executor": t.executor, "spec": t.spec_json, "seq": t.seq,
        })
        for t in tasks
    ]
    writes = __.constant([vertex_map(JOB, job)]).unfold().merge_v()
    writes = writes.side_effect(__.constant(task_maps).unfold().merge_v())
    for t in tasks:
        parent = __.V(t.parent_id).has_label(TASK) if t.parent_id is not None else __.V(job["id"]).has_label(JOB)
        writes = writes.side_effect(parent.add_e(HAS_TASK).to(__.V(t.id)))
        for need in t.needs:
            writes = writes.side_effect(__.V(t.id).add_e(DEPENDS_ON).to(__.V(need)))
    return g.V(job["id"]).has_label(JOB).fold().coalesce(__.unfold(), writes).element_map()


def _parent_path(t: NewTask) -> str | None:
    return t.path.rsplit("/", 1)[0] if "/" in t.path else None
