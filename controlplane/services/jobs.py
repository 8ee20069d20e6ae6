"""Jobs: submit a DAG (stored as Job, Task, DEPENDS_ON), hand it to a native `job` root, cancel, ask.

Submit refuses, naming the tasks, what no node of the cluster could ever run:
resources beyond every node, a GPU model nobody has, an unknown native executor.
Nothing is written then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controlplane import executors
from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, InvalidInput, NotFound
from controlplane.domain.jobs import JobSpec, TaskRow, flatten, parse_job
from controlplane.domain.records import AllocationRecord, JobRecord, TaskRecord
from controlplane.services.ids import new_ids
from graph_schema.store import NewTask

if TYPE_CHECKING:
    from controlplane.services.control import ControlPlane


JOB_STATES = ("submitted", "running", "succeeded", "failed", "cancelled")


class JobService:
    def __init__(self, control: ControlPlane, *, clock: Callable[[], float] = wall_clock) -> None:
        self.control = control
        self.store = control.store
        self.clock = clock

    def submit(
        self, spec: JobSpec | dict[str, Any], *, node: str | None = None, request_id: str | None = None, by: str | None = None
    ) -> JobRecord:
        job = parse_job(spec)
        rows = flatten(job)
        submitter = self._submitter(node)
        self._check_feasible(rows)
        job_id = "j" + hashlib.sha256(f"{request_id}".encode()).hexdigest()[:20] if request_id else _new_job_id()
        spec_json = job.model_dump_json()
        root_id = new_ids(1, request_id=f"root:{job_id}", parent_id=submitter)[0]  # what the spawn below will create
        record = self.store.create_job(
            job_id=job_id, name=job.name, spec_json=spec_json, node_id=submitter, tasks=_ordered(job_id, rows),
            root_id=root_id, now=self.clock(),
        )
        root_spec: dict[str, Any] = {
            "name": f"job:{job.name}", "executor": "native", "native": "job", "node": submitter,
            "restart": "temporary",  # a failed job is over; its tasks had their own restarts
            "resources": {"cpu_milli": 0, "memory_mib": 0},
        }
        if job.supervision is not None:
            root_spec["supervision"] = job.supervision.model_dump(mode="json")
        self.control.spawn(submitter, [root_spec], request_id=f"root:{job_id}", field="job", extra=[{"root_of": job_id}], by=by)
        return self.store.get_job(job_id=job_id) or record

    def _submitter(self, node: str | None) -> str:
        if node is not None:
            found = self.store.get_node(node_id=node)
            if found is None:
                raise NotFound(f"no node {node!r}", field="node")
            return found.id
        ready = self.store.list_nodes(after=None, limit=1, status="ready")
        if not ready:
            raise Conflict("no ready node to submit the job from", field="node")
        return ready[0].id

    def _check_feasible(self, rows: list[TaskRow]) -> None:
        nodes = []
        after = None
        while True:
            page = self.store.list_nodes(after=after, limit=1000)
            nodes.extend(n for n in page if n.status in ("ready", "draining"))
            if len(page) < 1000:
                break
            after = page[-1].id
        inventory = self.store.gpu_inventory()
        models = {n.id: inventory.get(n.id, {}) for n in nodes}
        problems = []
        for r in rows:
            t = r.spec
            if t.executor != "process":
                try:
                    executors.load(t.executor, field=f"tasks.{r.path}.executor").validate(dict(t.config))
                except InvalidInput as exc:
                    problems.append(f"{r.path}: {exc}")
                    continue
            res = t.resources
            fits = [
                n for n in nodes
                if n.cpu >= res.cpu_milli and n.memory >= res.memory_mib
                and all(f"{k}={v}" in n.labels for k, v in t.placement.node_labels.items())
                and (res.gpus == 0 or sum(c for m, c in models[n.id].items() if res.gpu_model in (None, m)) >= res.gpus)
            ]
            if not fits:
                wanted = f"cpu={res.cpu_milli}m memory={res.memory_mib}MiB"
                if res.gpus:
                    wanted += f" gpus={res.gpus}{' ' + res.gpu_model if res.gpu_model else ''}"
                if t.placement.node_labels:
                    wanted += " labels=" + ",".join(f"{k}={v}" for k, v in t.placement.node_labels.items())
                problems.append(f"{r.path}: no node could ever offer {wanted}")
        if problems:
            raise InvalidInput("; ".join(problems), field="job.tasks")

    def cancel(self, job_id: str, *, by: str = "user") -> JobRecord:
        job = self.job(job_id)
        if job.state in ("succeeded", "failed", "cancelled"):
            return job
        cancelled = self.store.set_job_state(job_id=job_id, expected=["submitted", "running"], to="cancelled",
                                             now=self.clock(), fields={"finished_at": self.clock()}) or job
        if job.root_id:
            self.control.stop(job.root_id, reason=f"job {job.name} cancelled", by=by)
        return cancelled

    def root_ended(self, root: AllocationRecord) -> None:
        """A job's root ended other than by its executor (stopped, lost, failed): the job ends with it."""
        outcome = {"stopped": "cancelled", "succeeded": "succeeded"}.get(root.state.value, "failed")
        self.store.set_job_state(
            job_id=str(root.extra["root_of"]), expected=["submitted", "running"], to=outcome, now=self.clock(),
            fields={"error": None if outcome != "failed" else f"root {root.id} {root.state.value}: {root.error or ''}".strip(),
                    "finished_at": self.clock()},
        )

    def job(self, job_id: str) -> JobRecord:
        found = self.store.get_job(job_id=job_id)
        if found is None:
            raise NotFound(f"no job {job_id!r}", field="id")
        return found

    def jobs(self, *, after: str | None = None, limit: int = 100, state: str | None = None) -> list[JobRecord]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("must be between 1 and 1000", field="first")
        if state is not None and state not in JOB_STATES:
            raise InvalidInput(f"unknown job state {state!r}; expected one of {', '.join(JOB_STATES)}", field="state")
        return self.store.list_jobs(after=after, limit=limit, state=state)

    def tasks(self, job_id: str) -> list[TaskRecord]:
        self.job(job_id)
        return self.store.job_tasks(job_id=job_id)

    def root(self, job_id: str) -> AllocationRecord | None:
        job = self.job(job_id)
        return self.store.get_allocation(allocation_id=job.root_id) if job.root_id else None


def _new_job_id() -> str:
    return "j" + new_ids(1)[0][1:]


def _ordered(job_id: str, rows: list[TaskRow]) -> list[NewTask]:
    """Tasks with parents and needs before the tasks that refer to them (create_job relies on it)."""
    by_path = {r.path: r for r in rows}
    done: set[str] = set()
    out: list[NewTask] = []

    def visit(path: str) -> None:
        if path in done:
            return
        r = by_path[path]
        if r.parent_path:
            visit(r.parent_path)
        for n in r.needs:
            visit(n)
        done.add(path)
        out.append(NewTask(
            id=f"{job_id}/{r.path}", path=r.path, name=r.name,
            parent_id=f"{job_id}/{r.parent_path}" if r.parent_path else None,
            needs=tuple(f"{job_id}/{n}" for n in r.needs), replicas=r.replicas, executor=r.spec.executor,
            spec_json=json.dumps({"needs": list(r.needs)}), seq=len(out),
        ))

    for r in rows:
        visit(r.path)
    return out
