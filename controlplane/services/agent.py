"""What a node agent reports: the lifecycle steps of one allocation incarnation on its node.

Every step is one guarded transition, so a redelivered task (Celery delivers at
least once) finds the precondition false and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from graph_schema.store import GraphStore

OUTPUT_TAIL_CHARS = 4096


class AgentService:
    def __init__(self, store: GraphStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def begin_start(self, allocation_id: str, incarnation: int, *, node_id: str) -> AllocationRecord | None:
        """placed -> starting; None when this incarnation is not ours to start (already started, stopped, replaced)."""
        result = self.store.transition(
            allocation_id=allocation_id, expected=[State.PLACED], to=State.STARTING, now=self.clock(),
            incarnation=incarnation, fields={"agent": node_id},
        )
        if result is None or not result.applied or result.allocation.node_id != node_id:
            return None
        return result.allocation

    def running(self, allocation_id: str, incarnation: int, *, pid: int) -> bool:
        result = self.store.transition(
            allocation_id=allocation_id, expected=[State.STARTING], to=State.RUNNING, now=self.clock(),
            incarnation=incarnation, fields={"pid": pid, "started_at": self.clock()},
        )
        return bool(result and result.applied)

    def exited(self, allocation_id: str, incarnation: int, *, exit_code: int, output_tail: str) -> AllocationRecord | None:
        """The process ended: stopped if a stop was asked for, else succeeded (0) or failed."""
        tail = output_tail[-OUTPUT_TAIL_CHARS:]
        now = self.clock()
        fields = {"exit_code": exit_code, "output_tail": tail, "finished_at": now}
        stopping = self.store.transition(
            allocation_id=allocation_id, expected=[State.STOPPING], to=State.STOPPED, now=now,
            incarnation=incarnation, fields=fields,
        )
        if stopping is None:
            return None
        if stopping.applied:
            return stopping.allocation
        outcome = State.SUCCEEDED if exit_code == 0 else State.FAILED
        if outcome is State.FAILED:
            fields["error"] = f"exited with code {exit_code}" if exit_code >= 0 else f"killed by signal {-exit_code}"
        result = self.store.transition(
            allocation_id=allocation_id, expected=[State.STARTING, State.RUNNING], to=outcome, now=now,
            incarnation=incarnation, fields=fields,
        )
        return result.allocation if result and result.applied else None

    def failed_to_start(self, allocation_id: str, incarnation: int, *, error: str) -> None:
        self.store.transition(
            allocation_id=allocation_id, expected=[State.STARTING, State.PLACED], to=State.FAILED, now=self.clock(),
            incarnation=incarnation, fields={"error": error[:OUTPUT_TAIL_CHARS], "exit_code": -1},
        )

    def stop_unstarted(self, allocation_id: str, incarnation: int) -> None:
        """A stop reached the agent before the process existed: stopping -> stopped with no process."""
        self.store.transition(
            allocation_id=allocation_id, expected=[State.STOPPING], to=State.STOPPED, now=self.clock(),
            incarnation=incarnation, fields={"error": "stopped before its process started"},
        )
