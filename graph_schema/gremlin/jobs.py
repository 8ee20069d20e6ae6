"""GremlinStore's placement reads (candidates, spread, GPU inventory) and the Job DAG (Job, Task, HAS_TASK, DEPENDS_ON).

The Gremlin counterpart of the placement and jobs parts of cypher/statements.py,
apart from store.py to keep each module short. Same rules as writes.py: one traversal
per state change with its precondition inside, values as arguments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Order, P

from controlplane.domain.lifecycle import LIVE
from controlplane.domain.records import JobRecord, TaskRecord
from controlplane.domain.resources import FreeGpu, NodeCapacity
from graph_schema.gremlin.remote import props_of, value
from graph_schema.gremlin.steps import A, G, GPU_OWNER, N, having, set_props, vertex_map
from graph_schema.store import NewTask
from graph_schema.vocabulary import EdgeType, Label

if TYPE_CHECKING:
    from graph_schema.gremlin.remote import Remote

JOB = Label.JOB.value
TASK = Label.TASK.value
HAS_TASK = EdgeType.HAS_TASK.value
DEPENDS_ON = EdgeType.DEPENDS_ON.value
EXECUTES = EdgeType.EXECUTES.value
_LIVE = sorted(s.value for s in LIVE)
#: every node status (DESIGN.md): nodes are found through their indexed status, never by a scan
NODE_STATUSES = ("ready", "draining", "lost", "down")


def capacity_projection(t: GraphTraversal) -> GraphTraversal:
    """From Node vertices: what placement needs, free GPUs included."""
    free_gpus = __.in_(GPU_OWNER).has_label(G).not_(__.has("claimed_by")).project("id", "model").by("id").by("model").fold()
    return (
        t.project("id", "status", "labels", "cpu_free", "memory_free", "gpus")
        .by("id").by("status").by("labels").by("cpu_free").by("memory_free").by(free_gpus)
    )


def capacity(r: dict[str, Any]) -> NodeCapacity:
    return NodeCapacity(
        node_id=r["id"], status=r["status"], labels=tuple(r.get("labels") or ()),
        cpu_free=int(r["cpu_free"]), memory_free=int(r["memory_free"]),
        free_gpus=tuple(sorted((FreeGpu(x["id"], x["model"]) for x in r["gpus"]), key=lambda x: x.id)),
    )


class JobsMixin:
    _remote: Remote

    # --- placement ---------------------------------------------------------------------
    def candidates(
        self, *, cpu: int, memory: int, gpus: int, gpu_model: str | None, labels: Sequence[str],
        node_ids: Sequence[str] | None, limit: int,
    ) -> list[NodeCapacity]:
        if node_ids is not None and not node_ids:
            return []

        def build(g: Any) -> GraphTraversal:
            t = g.V(*dict.fromkeys(node_ids)).has_label(N) if node_ids is not None else having(g, N, "status", ["ready"])
            t = t.has("status", "ready").has("cpu_free", P.gte(value(cpu))).has("memory_free", P.gte(value(memory)))
            for label in labels:
                t = t.where(__.values("labels").unfold().is_(label))
            if gpus:
                free = __.in_(GPU_OWNER).has_label(G).not_(__.has("claimed_by"))
                if gpu_model is not None:
                    free = free.has("model", gpu_model)
                t = t.where(free.count().is_(P.gte(value(gpus))))
            return capacity_projection(t.order().by("cpu_free", Order.desc).by("id").limit(int(limit)))

        return [capacity(r) for r in self._remote.run(build, write=False)]

    def spread_counts(self, *, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        if not keys:
            return {}
        rows = self._remote.run(
            lambda g: having(g, A, "spread_key", list(keys)).has("state", P.within(_LIVE))
            .project("k", "n").by("spread_key").by("node_id"),
            write=False,
        )
        return dict(Counter((r["k"], r["n"]) for r in rows))

    def gpu_inventory(self) -> dict[str, dict[str, int]]:
        rows = self._remote.run(
            lambda g: having(g, N, "status", list(NODE_STATUSES)).project("n", "models")
            .by("id").by(__.in_(GPU_OWNER).has_label(G).values("model").fold()),
            write=False,
        )
        return {r["n"]: dict(Counter(r["models"])) for r in rows if r["models"]}

    # --- jobs --------------------------------------------------------------------------
    def create_job(
        self, *, job_id: str, name: str, spec_json: str, node_id: str, tasks: Sequence[NewTask], root_id: str, now: float
    ) -> JobRecord:
        job = {
            "id": job_id, "name": name, "state": "submitted", "spec": spec_json, "submitted_at": now,
            "updated_at": now, "submitted_by": node_id, "tasks_total": len(tasks), "root_id": root_id,
        }
        m = self._remote.one(lambda g: _create_job(g, job, tasks))
        return JobRecord.from_props(props_of(m))

    def get_job(self, *, job_id: str) -> JobRecord | None:
        m = self._remote.one(lambda g: g.V(job_id).has_label(JOB).element_map(), write=False)
        return JobRecord.from_props(props_of(m)) if m else None

    def list_jobs(self, *, after: str | None, limit: int, state: str | None = None) -> list[JobRecord]:
        def build(g: Any) -> GraphTraversal:
            t = having(g, JOB, "state", [state]) if state is not None else g.V().has_label(JOB)
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

    def set_task_states(self, *, changes: Sequence[tuple[str, Sequence[str], str]], now: float) -> list[str]:
        if not changes:
            return []

        def build(g: Any) -> GraphTraversal:
            t = g.inject(0).project(*[f"c{i}" for i in range(len(changes))])
            for task_id, expected, to in changes:
                moved = __.V(task_id).has_label(TASK).has("state", P.within(list(expected)))
                t = t.by(moved.property("state", to).property("updated_at", now).values("id").fold())
            return t

        r = self._remote.one(build)
        return [x for i in range(len(changes)) for x in r[f"c{i}"]]

    def set_job_state(
        self, *, job_id: str, expected: Sequence[str], to: str, now: float, fields: dict[str, Any] | None = None
    ) -> JobRecord | None:
        def build(g: Any) -> GraphTraversal:
            t = g.V(job_id).has_label(JOB).has("state", P.within(list(expected)))
            t = t.property("state", to).property("updated_at", now)
            return set_props(t, fields or {}, drop_none=True).element_map()

        m = self._remote.one(build)
        return JobRecord.from_props(props_of(m)) if m else None


def _create_job(g: Any, job: dict[str, Any], tasks: Sequence[NewTask]) -> GraphTraversal:
    """The Job, its Tasks, HAS_TASK and DEPENDS_ON; a repeat (the job id exists) changes nothing."""
    task_maps = [
        vertex_map(TASK, {
            "id": t.id, "job_id": job["id"], "path": t.path, "name": t.name, "parent_path": _parent_path(t),
            "state": "pending", "replicas": t.replicas, "executor": t.executor, "spec": t.spec_json, "seq": t.seq,
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
