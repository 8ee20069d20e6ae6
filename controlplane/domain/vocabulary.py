"""The graph's vocabulary: vertex labels, edge types and the properties a filter may name.

Labels and edge types that reach a query come only from these enums; values
always travel as parameters. Pure: no driver imports (checked by import-linter).
"""

from __future__ import annotations

from enum import Enum


class Label(str, Enum):
    NODE = "Node"
    GPU = "Gpu"
    ALLOCATION = "Allocation"
    #: carried by every Node and Allocation: the things that can be a parent, one id space
    ACTOR = "Actor"
    #: a transition or a supervision decision, kept as history
    EVENT = "Event"
    JOB = "Job"
    TASK = "Task"


class EdgeType(str, Enum):
    PARENT_OF = "PARENT_OF"  # creator -> created (Node -> Allocation, Allocation -> Allocation)
    RUNS_ON = "RUNS_ON"  # Allocation -> Node
    NEIGHBOR_OF = "NEIGHBOR_OF"  # Node -> Node, stored once per direction, rtt_ms and bandwidth
    GPU_OWNER = "GPU_OWNER"  # Gpu -> Node
    CLAIMS = "CLAIMS"  # Allocation -> Gpu, while the allocation holds it
    WATCHES = "WATCHES"  # Allocation -> Allocation (death watch)
    HAS_TASK = "HAS_TASK"  # Job -> Task, and Task -> its nested child Task
    DEPENDS_ON = "DEPENDS_ON"  # Task -> Task it needs
    EXECUTES = "EXECUTES"  # Allocation -> the Task it runs (a job's root: -> the Job)


class Direction(str, Enum):
    OUT = "out"
    IN = "in"
    BOTH = "both"


#: properties a traversal filter may name, per label (anything else is refused)
FILTERABLE: dict[Label, frozenset[str]] = {
    Label.NODE: frozenset({"id", "name", "status", "cpu", "memory", "cpu_free", "memory_free", "labels"}),
    Label.GPU: frozenset({"id", "model", "memory", "claimed_by"}),
    Label.JOB: frozenset({"id", "name", "state"}),
    Label.TASK: frozenset({"id", "name", "path", "state", "job_id", "executor", "replicas"}),
    Label.ALLOCATION: frozenset(
        {"id", "name", "executor", "state", "incarnation", "node_id", "parent_id", "exit_code", "cpu", "memory", "gpus"}
    ),
}
ALL_FILTERABLE: frozenset[str] = frozenset().union(*FILTERABLE.values())

#: properties an Allocation vertex carries that a projection may ask for
ALLOCATION_PROPERTIES: frozenset[str] = frozenset({
    "id", "name", "executor", "argv", "env", "state", "incarnation", "version", "parent_id", "node_id", "cpu", "memory",
    "gpus", "gpu_model", "gpu_ids", "grace_period_s", "created_at", "updated_at", "exit_code", "error", "output_tail",
    "pid", "seq", "restart_type", "supervision", "child_policy", "restart_log", "backoff_level", "restarts", "native",
    "config", "job_id", "task_id", "root_of", "orphan", "orphaned_at", "restart_at", "started_at", "finished_at",
    "stop_requested_at", "escalated", "agent", "process_exited", "pin", "node_labels", "max_rtt_ms", "spread_key",
    "waiting", "stop_grace_s", "log_path",
})
#: what a new incarnation starts without: the previous one's exit, process, output and pending plans
CLEARED_ON_RESTART: tuple[str, ...] = (
    "exit_code", "pid", "error", "output_tail", "agent", "started_at", "finished_at", "restart_at",
    "stop_requested_at", "process_exited", "escalated", "waiting", "stop_grace_s", "log_path",
)
#: always part of a projection: what records and relations need
ALLOCATION_CORE: tuple[str, ...] = ("id", "state", "incarnation", "parent_id", "node_id", "executor", "name")
