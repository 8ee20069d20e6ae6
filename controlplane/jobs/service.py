"""Jobs: submit a DAG (stored as Job, Task, DEPENDS_ON), hand it to a native `job` root, cancel, ask.

Submit refuses, naming the tasks, what no node of the cluster could ever run:
resources beyond every node, a GPU model nobody has, an unknown native executor.
Nothing is written then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, InvalidInput, NotFound, Unsatisfiable
from controlplane.domain.lifecycle import State
from controlplane.domain.placement import Demand, explain
from controlplane.domain.records import AllocationRecord
from controlplane.domain.text import REQUEST_ID_MAX, Id, Line, checked
from controlplane.jobs.executor import end_tasks
from controlplane.jobs.model import JOB_ACTIVE, JOB_FINISHED, JOB_OUTCOME_OF_ROOT, JobRecord, JobState, TaskRecord
from controlplane.jobs.ports import JobStore, NewTask
from controlplane.jobs.spec import JobSpec, TaskRow, flatten, parse_job
from controlplane.ports.native import NativeExecutor
from controlplane.ports.store import Hierarchy, PlacementReads, Topology
from controlplane.services.allocations import AllocationService
from controlplane.services.ids import new_ids

#: nodes a submitted job's tasks are checked against (the most cpu first)
FEASIBILITY_NODES = 10_000


class JobReads(Topology, Hierarchy, PlacementReads, Protocol):
    """What jobs read of the platform graph."""


class JobService:
    def __init__(
        self,
        jobs: JobStore,
        store: JobReads,
        allocations: AllocationService,
        natives: Callable[[str, str], NativeExecutor],
        *,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        self.jobs_store = jobs
        self.store = store
        self.allocations = allocations
        self.natives = natives
        self.clock = clock
        #: a running job root to tell that a nested task of its job ended (set by the assembly point)
        self.advance_root: Callable[[AllocationRecord], None] = lambda root: None

    @checked(node=Id("node"), request_id=Line("requestId", max_length=REQUEST_ID_MAX))
    def submit(
        self, spec: JobSpec | Mapping[str, Any], *, node: str | None = None, request_id: str | None = None,
        by: str | None = None,
    ) -> JobRecord:
        job = parse_job(spec)
        rows = flatten(job)
        submitter = self._submitter(node)
        self._check_feasible(rows)
        job_id = "j" + hashlib.sha256(f"{request_id}".encode()).hexdigest()[:20] if request_id else _new_job_id()
        spec_json = job.model_dump_json()
        root_id = new_ids(1, request_id=f"root:{job_id}", parent_id=submitter)[0]  # what the spawn below will create
        record = self.jobs_store.create_job(
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
        self.allocations.spawn(submitter, [root_spec], request_id=f"root:{job_id}", field="job", extra=[{"root_of": job_id}],
                               by=by)
        return self.jobs_store.get_job(job_id=job_id) or record

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
        """Refuse what no node could ever run, by the placer's own rule (`explain`): a task's resources, GPUs and
        labels against every node, whatever its status now. No room now is not refused: the task waits its turn."""
        inventory = self.store.node_inventory(labels=(), node_ids=None, limit=FEASIBILITY_NODES)
        problems = []
        for r in rows:
            t = r.spec
            if t.executor != "process":
                try:
                    self.natives(t.executor, f"tasks.{r.path}.executor").validate(dict(t.config))
                except InvalidInput as exc:
                    problems.append(f"{r.path}: {exc}")
                    continue
            demand = Demand(resources=t.resources.to_resources(),
                            labels=tuple(sorted(f"{k}={v}" for k, v in t.placement.node_labels.items())))
            why = explain(demand, inventory, field=r.path)
            if isinstance(why, Unsatisfiable):
                where = (why.field or r.path).replace(f"{r.path}.node_labels", f"{r.path}.placement.node_labels")
                problems.append(f"{where}: {why.message}")
        if problems:
            raise InvalidInput("; ".join(problems), field="job.tasks")

    @checked(job_id=Id("id"))
    def cancel(self, job_id: str, *, by: str = "user") -> JobRecord:
        job = self.job(job_id)
        if job.state in JOB_FINISHED:
            return job
        now = self.clock()
        cancelled = self.jobs_store.set_job_state(job_id=job_id, expected=JOB_ACTIVE, to=JobState.CANCELLED,
                                                  now=now, fields={"finished_at": now}) or job
        end_tasks(self.jobs_store, job_id, now)  # running ones are cancelled, unstarted ones skipped
        if job.root_id:
            self.allocations.stop(job.root_id, reason=f"job {job.name} cancelled", by=by)
        return cancelled

    def on_ended(self, records: Sequence[AllocationRecord]) -> None:
        """After supervision (a hook): a job ends when its root ends; a nested task's end advances its job's root."""
        for a in records:
            if a.extra.get("root_of"):
                self._root_ended(a)
        jobs = {str(a.extra["job_id"]) for a in records if a.extra.get("job_id")}
        parents = self.store.get_allocations(allocation_ids=list({a.parent_id for a in records}))
        for p in parents:  # a running root already heard of its own children
            if p.extra.get("root_of") and p.executor == "native" and p.state is State.RUNNING:
                jobs.discard(str(p.extra["root_of"]))
        for job_id in sorted(jobs):
            job = self.jobs_store.get_job(job_id=job_id)
            root = self.store.get_allocation(allocation_id=job.root_id) if job and job.root_id else None
            if root is not None and root.state is State.RUNNING:
                self.advance_root(root)

    def _root_ended(self, root: AllocationRecord) -> None:
        """A job's root ended other than by its executor (stopped, lost, failed): the job ends with it."""
        outcome = JOB_OUTCOME_OF_ROOT.get(root.state, JobState.FAILED)
        now = self.clock()
        job_id = str(root.extra["root_of"])
        self.jobs_store.set_job_state(
            job_id=job_id, expected=JOB_ACTIVE, to=outcome, now=now,
            fields={"error": None if outcome is not JobState.FAILED else f"root {root.id} {root.state.value}: {root.error or ''}".strip(),
                    "finished_at": now},
        )
        end_tasks(self.jobs_store, job_id, now)  # whatever ended the job, no task is left pending or running

    @checked(job_id=Id("id"))
    def job(self, job_id: str) -> JobRecord:
        found = self.jobs_store.get_job(job_id=job_id)
        if found is None:
            raise NotFound(f"no job {job_id!r}", field="id")
        return found

    @checked(after=Id("after"), state=Line("state", max_length=64))
    def jobs(self, *, after: str | None = None, limit: int = 100, state: str | None = None) -> list[JobRecord]:
        if not 1 <= limit <= 1000:
            raise InvalidInput("must be between 1 and 1000", field="first")
        if state is not None and state not in {s.value for s in JobState}:
            raise InvalidInput(f"unknown job state {state!r}; expected one of {', '.join(JobState)}", field="state")
        return self.jobs_store.list_jobs(after=after, limit=limit, state=JobState(state) if state else None)

    @checked(job_id=Id("id"))
    def tasks(self, job_id: str) -> list[TaskRecord]:
        self.job(job_id)
        return self.jobs_store.job_tasks(job_id=job_id)

    @checked(job_id=Id("id"))
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
