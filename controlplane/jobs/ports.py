"""The job store: the Job DAG in the graph (Job, Task, HAS_TASK, DEPENDS_ON) and what the job root reads of it.

Implemented for Cypher engines in jobs/cypher.py and for Gremlin in jobs/gremlin.py,
over the same connection as the engine's graph store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.jobs.model import JobRecord, JobState, TaskRecord, TaskState


@dataclass(frozen=True, slots=True)
class NewTask:
    id: str
    path: str
    name: str
    parent_id: str | None  # the task it is a nested child of
    needs: tuple[str, ...]  # ids of the tasks it depends on
    replicas: int
    executor: str
    spec_json: str
    seq: int


class JobStore(Protocol):
    def create_job(
        self, *, job_id: str, name: str, spec_json: str, node_id: str, tasks: Sequence[NewTask], root_id: str, now: float
    ) -> JobRecord:
        """The Job, its Tasks, HAS_TASK and DEPENDS_ON in one request; a repeat returns the existing job."""

    def get_job(self, *, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, *, after: str | None, limit: int, state: JobState | None = None) -> list[JobRecord]: ...

    def job_tasks(self, *, job_id: str) -> list[TaskRecord]:
        """Every task of the job, in submission order, with the allocations that executed it."""

    def set_task_states(self, *, changes: Sequence[tuple[str, Sequence[TaskState], TaskState]], now: float) -> list[str]:
        """(task id, expected states, new state) each; returns the ids that changed."""

    def set_job_state(
        self, *, job_id: str, expected: Sequence[JobState], to: JobState, now: float, fields: dict[str, Any] | None = None
    ) -> JobRecord | None: ...
