"""What a node agent reports: the lifecycle steps of allocation incarnations on its node.

Every step is a guarded transition, so a redelivered task (Celery delivers at
least once) finds the precondition false and changes nothing. Steps come in
batches: one graph request for many allocations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain.clock import wall_clock
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.domain.supervision import START_ERROR_PREFIX
from graph_schema.store import Change, GraphStore

OUTPUT_TAIL_CHARS = 4096
Key = tuple[str, int]  # (allocation id, incarnation)


@dataclass(frozen=True, slots=True)
class Exit:
    key: Key
    exit_code: int
    output_tail: str
    #: why it failed when the exit code does not say it (e.g. "oom_killed: memory limit ...")
    failure: str | None = None
    #: what was measured (usage_cpu_s, usage_memory_peak_mib, ...), recorded with the exit
    fields: Mapping[str, Any] = field(default_factory=dict)


def describe_exit(code: int) -> str:
    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"


class AgentService:
    def __init__(self, store: GraphStore, *, node_id: str = "", clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.node_id = node_id
        self.clock = clock

    def begin_start(self, keys: Sequence[Key], *, node_id: str) -> list[AllocationRecord]:
        """placed -> starting for each; returns those that are ours to start now.

        Not ours: already started (a redelivery), stopped first, a newer incarnation, another node.
        """
        changes = [Change(i, {State.PLACED: State.STARTING}, inc, {"agent": node_id}, reason="agent took it", by=node_id)
                   for i, inc in keys]
        results = self.store.transition_many(changes=changes, now=self.clock())
        return [r.allocation for r in results if r is not None and r.applied and r.allocation.node_id == node_id]

    def running(self, started: Sequence[tuple[Key, int]]) -> set[Key]:
        """starting -> running with the pid; returns the keys that were stopped meanwhile (to be ended)."""
        now = self.clock()
        changes = [Change(i, {State.STARTING: State.RUNNING}, inc, {"pid": pid, "started_at": now},
                          reason=f"pid {pid}", by=self.node_id) for (i, inc), pid in started]
        results = self.store.transition_many(changes=changes, now=now)
        refused: set[Key] = set()
        for (key, _pid), r in zip(started, results):
            if r is not None and not r.applied and r.allocation.state in (State.STOPPING, State.STOPPED):
                refused.add(key)
        return refused

    def exited(self, exits: Sequence[Exit]) -> list[AllocationRecord]:
        """Processes ended: stopped if a stop was asked for, else succeeded (0) or failed.

        Returns the allocations that became terminal. A stopping parent whose process
        ended before its children keeps `stopping` (its exit is noted); the supervisor
        ends it once its subtree is terminal.
        """
        now = self.clock()
        changes = []
        for e in exits:
            outcome = State.SUCCEEDED if e.exit_code == 0 else State.FAILED
            why = e.failure or describe_exit(e.exit_code)
            changes.append(
                Change(
                    e.key[0],
                    {State.STOPPING: State.STOPPED, State.STARTING: outcome, State.RUNNING: outcome},
                    e.key[1],
                    {**e.fields, "exit_code": e.exit_code, "output_tail": e.output_tail[-OUTPUT_TAIL_CHARS:], "finished_at": now},
                    failure=why,
                    reason=why,
                    by=self.node_id,
                    leaf_only=True,
                )
            )
        results = self.store.transition_many(changes=changes, now=now)
        ended = []
        for e, r in zip(exits, results):
            if r is None:
                continue
            if r.applied:
                ended.append(r.allocation)
            elif r.allocation.state is State.STOPPING and r.allocation.incarnation == e.key[1]:
                self.store.set_fields(
                    allocation_id=e.key[0], incarnation=e.key[1],
                    fields={**e.fields, "process_exited": True, "exit_code": e.exit_code,
                            "output_tail": e.output_tail[-OUTPUT_TAIL_CHARS:], "finished_at": now},
                )
        return ended

    def failed_to_start(self, key: Key, *, error: str) -> bool:
        [r] = self.store.transition_many(
            changes=[Change(key[0], {State.STARTING: State.FAILED, State.PLACED: State.FAILED}, key[1],
                            {"exit_code": -1}, failure=(START_ERROR_PREFIX + error)[:OUTPUT_TAIL_CHARS],
                            reason="could not start", by=self.node_id)],
            now=self.clock(),
        )
        return bool(r and r.applied)

    def stop_unstarted(self, key: Key) -> bool:
        """A stop reached the agent while no process existed: stopping -> stopped with no process."""
        [r] = self.store.transition_many(
            changes=[Change(key[0], {State.STOPPING: State.STOPPED}, key[1], {"process_exited": True},
                            reason="no process to stop", by=self.node_id, leaf_only=True)],
            now=self.clock(),
        )
        return bool(r and r.applied)
