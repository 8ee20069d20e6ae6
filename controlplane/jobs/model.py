"""What a job and its tasks are in the graph: their states and the records the job store returns.

Pure: no I/O. A task's state is derived from the allocations that run it
(`derive`); a job's from its tasks and its root. When a job ends, every task that
had not finished ends with it (`at_job_end`): `skipped` if it never started,
`cancelled` if its allocations were stopped; a failed job's error says which task
failed, how (exit code or signal) and how its output ended (`failure_summary`).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controlplane.domain.lifecycle import TERMINAL, State
from controlplane.domain.records import AllocationRecord


class JobState(StrEnum):
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: its allocations were stopped because the job ended (cancelled, or failed elsewhere)
    CANCELLED = "cancelled"
    #: it never started: the job ended first
    SKIPPED = "skipped"


JOB_ACTIVE: tuple[JobState, ...] = (JobState.SUBMITTED, JobState.RUNNING)
JOB_FINISHED: tuple[JobState, ...] = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
TASK_FINISHED: tuple[TaskState, ...] = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED)
#: how much of a failed task's output its job's error quotes
ERROR_TAIL_CHARS = 400
#: how a job ends when its root ends other than by its executor
JOB_OUTCOME_OF_ROOT: dict[State, JobState] = {State.STOPPED: JobState.CANCELLED, State.SUCCEEDED: JobState.SUCCEEDED}


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One allocation that executes a task: which, which incarnation, where, how it stands."""

    allocation_id: str
    incarnation: int
    state: State
    node_id: str
    restart_pending: bool = False


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    job_id: str
    path: str
    name: str
    parent_path: str | None
    state: TaskState
    replicas: int
    executor: str
    spec_json: str
    runs: tuple[TaskRun, ...] = ()
    updated_at: float = 0.0

    @classmethod
    def from_props(cls, p: dict[str, Any], runs: list[list[Any]] | None = None) -> TaskRecord:
        return cls(
            id=p["id"], job_id=p.get("job_id", ""), path=p.get("path", ""), name=p.get("name", ""),
            parent_path=p.get("parent_path") or None, state=TaskState(p.get("state", "pending")),
            replicas=int(p.get("replicas", 1)), executor=p.get("executor", "process"), spec_json=p.get("spec", "{}"),
            runs=tuple(TaskRun(r[0], int(r[1]), State(r[2]), r[3] or "", len(r) > 4 and r[4] is not None)
                       for r in (runs or []) if r and r[0] is not None),
            updated_at=float(p.get("updated_at") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    name: str
    state: JobState
    spec_json: str
    submitted_at: float
    updated_at: float
    submitted_by: str
    tasks_total: int
    root_id: str | None = None
    error: str | None = None

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> JobRecord:
        return cls(
            id=p["id"], name=p.get("name", ""), state=JobState(p.get("state", "submitted")), spec_json=p.get("spec", "{}"),
            submitted_at=float(p.get("submitted_at", 0.0)), updated_at=float(p.get("updated_at", 0.0)),
            submitted_by=p.get("submitted_by", ""), tasks_total=int(p.get("tasks_total", 0)),
            root_id=p.get("root_id"), error=p.get("error"),
        )


def derive(task: TaskRecord) -> TaskState:
    """A task's state from the allocations that run it."""
    if task.state in TASK_FINISHED:
        return task.state
    runs = task.runs
    if len(runs) < task.replicas:
        return task.state
    if all(r.state is State.SUCCEEDED for r in runs):
        return TaskState.SUCCEEDED
    if any(r.state in TERMINAL and r.state is not State.SUCCEEDED and not r.restart_pending for r in runs):
        return TaskState.FAILED
    return TaskState.RUNNING


def at_job_end(task: TaskRecord) -> TaskState:
    """What a task is once its job has ended: finished as its allocations say, else `skipped` (it never
    started) or `cancelled` (its allocations were, or are being, stopped)."""
    if task.state in TASK_FINISHED:
        return task.state
    runs = task.runs
    if runs and len(runs) >= task.replicas and all(r.state is State.SUCCEEDED for r in runs):
        return TaskState.SUCCEEDED
    if any(r.state in (State.FAILED, State.LOST) and not r.restart_pending for r in runs):
        return TaskState.FAILED
    return TaskState.CANCELLED if runs else TaskState.SKIPPED


def describe_end(a: AllocationRecord) -> str:
    """How an allocation ended, for people: "exited with code 3", "killed by signal 9 (SIGKILL)", "node n1 lost"."""
    code = a.exit_code
    if a.error and not a.error.startswith(("exited with code", "killed by signal")):
        return a.error  # lost with its node, could not start, escalated: the error says it best
    if code is not None and code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"killed by signal {-code}{name}"
    if code is not None:
        return f"exited with code {code}"
    return a.error or a.state.value


def failure_summary(path: str, failed: Sequence[AllocationRecord]) -> str:
    """Why a task failed: its failing allocation, how it ended, and the end of its output."""
    if not failed:
        return f"task {path} failed"
    a = failed[0]
    more = f" (and {len(failed) - 1} more replica{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
    tail = (a.output_tail or "").rstrip()
    if len(tail) > ERROR_TAIL_CHARS:
        tail = "..." + tail[-ERROR_TAIL_CHARS:]
    output = f"; output ends: {tail}" if tail else "; no output"
    return (f"task {path} failed: allocation {a.id} (incarnation {a.incarnation} on {a.node_id}) "
            f"{describe_end(a)}{more}{output}")
