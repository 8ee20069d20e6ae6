"""What a node agent reports of the allocations placed on its node: guarded moves of the lifecycle table.

Each report is one graph request for a batch, every change guarded by the state it
moves from, the incarnation it is about, and the reporting node (`Change.on_node`:
node restriction inside the same statement), so a redelivered work item finds the
precondition false and changes nothing, and a report about an allocation placed on
another node changes nothing either. Such foreign reports are collected in `refused`
for the caller (AgentService) to refuse and record. No processes and no transport
here: the agent API calls this for the agent's requests, and tests drive an
allocation's life with it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.lifecycle import AGENT_RESTARTED, AGENT_STOPPED, CLAIM, RUN, START_FAILED, STOPPED, State, exit_move
from controlplane.domain.records import AllocationRecord, Exit, TransitionResult
from controlplane.domain.supervision import START_ERROR_PREFIX
from controlplane.domain.text import printable
from controlplane.ports.dispatch import Key
from controlplane.ports.store import Change, Hierarchy, Ledger, Topology

OUTPUT_TAIL_CHARS = 4096
PAGE = 1000


def describe_exit(code: int) -> str:
    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"


class AgentStore(Topology, Ledger, Hierarchy, Protocol):
    """What a node agent's reports read and write: its node, and the allocations placed on it."""


class AgentReports:
    """The reports of the agent of `node`; `refused` collects (key, where it is placed) of reports about
    allocations that are not this node's (the same incarnation placed elsewhere, or a native one)."""

    def __init__(self, store: AgentStore, *, node: str, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.node = node
        self.clock = clock
        self.refused: list[tuple[Key, str]] = []

    def _apply(self, changes: Sequence[Change], now: float | None = None) -> list[TransitionResult | None]:
        results = self.store.transition_many(changes=changes, now=self.clock() if now is None else now)
        for c, r in zip(changes, results, strict=True):
            if r is None or r.applied or r.allocation.incarnation != c.incarnation:
                continue  # gone, moved on, or a stale incarnation: nothing to refuse
            a = r.allocation
            if a.node_id != self.node or a.executor != "process":
                self.refused.append(((a.id, a.incarnation), a.node_id if a.executor == "process" else f"{a.node_id} (native)"))
        return results

    def recover(self) -> list[Key]:
        """A fresh agent process runs nothing yet: what its node still shows as started died with the last agent.

        Started allocations become `lost` (their parents decide), stopping ones `stopped`. Without this, an
        agent restarted within the node's grace period would leave them `running` for ever.
        """
        now = self.clock()
        ended: list[Key] = []
        for state in (State.STARTING, State.RUNNING, State.STOPPING):
            after = None
            while True:
                page = self.store.list_allocations(after=after, limit=PAGE, state=state.value, node_id=self.node)
                results = self._apply([
                    Change(a.id, AGENT_RESTARTED, a.incarnation, {"process_exited": True}, failure="node agent restarted",
                           reason="node agent restarted", by=self.node, on_node=self.node)
                    for a in page if a.executor == "process"], now)  # native ones run in supervisors
                ended += [(r.allocation.id, r.allocation.incarnation) for r in results if r is not None and r.applied]
                if len(page) < PAGE:
                    break
                after = page[-1].id
        return ended

    def claim(self, keys: Sequence[Key]) -> list[AllocationRecord]:
        """placed -> starting for each; returns those that are ours to start now.

        Not ours: already started (a redelivery), stopped first, a newer incarnation, another node (refused).
        """
        changes = [Change(i, CLAIM, inc, {"agent": self.node}, reason="agent took it", by=self.node, on_node=self.node)
                   for i, inc in keys]
        return [r.allocation for r in self._apply(changes) if r is not None and r.applied]

    def running(self, started: Sequence[tuple[Key, int]], *, log_paths: Mapping[Key, str] | None = None) -> set[Key]:
        """starting -> running with the pid (and where its output goes); returns the keys that were stopped
        meanwhile (to be ended)."""
        now = self.clock()
        logs = log_paths or {}
        changes = [Change(i, RUN, inc, {"pid": pid, "started_at": now, "log_path": logs.get((i, inc))},
                          reason=f"pid {pid}", by=self.node, on_node=self.node)
                   for (i, inc), pid in started]
        results = self._apply(changes, now)
        return {key for (key, _pid), r in zip(started, results, strict=True)
                if r is not None and not r.applied and r.allocation.node_id == self.node
                and r.allocation.state in (State.STOPPING, State.STOPPED)}

    def exited(self, exits: Sequence[Exit]) -> list[AllocationRecord]:
        """Processes ended: stopped if a stop was asked for, else succeeded (0) or failed.

        Returns the allocations that became terminal. A stopping parent whose process ended before its
        children keeps `stopping` (its exit is noted); the supervisor ends it once its subtree is terminal.
        """
        now = self.clock()

        def noted(e: Exit) -> dict[str, Any]:
            return {**e.fields, "exit_code": e.exit_code, "output_tail": printable(e.output_tail[-OUTPUT_TAIL_CHARS:]),
                    "finished_at": now}

        changes = [
            Change(e.key[0], exit_move(e.exit_code), e.key[1], noted(e), failure=e.failure or describe_exit(e.exit_code),
                   reason=e.failure or describe_exit(e.exit_code), by=self.node, leaf_only=True, on_node=self.node)
            for e in exits
        ]
        results = self._apply(changes, now)
        ended = []
        for e, r in zip(exits, results, strict=True):
            if r is None:
                continue
            if r.applied:
                ended.append(r.allocation)
            elif (r.allocation.state is State.STOPPING and r.allocation.incarnation == e.key[1]
                  and r.allocation.node_id == self.node and r.allocation.executor == "process"):
                self.store.set_fields(allocation_id=e.key[0], incarnation=e.key[1],
                                      fields={**noted(e), "process_exited": True})
        return ended

    def gone_with_agent(self, keys: Sequence[Key]) -> list[AllocationRecord]:
        """The agent was stopped on purpose and its processes with it: lost (their parents decide), not failed."""
        results = self._apply([
            Change(i, AGENT_STOPPED, inc, {"process_exited": True}, failure="node agent stopped",
                   reason="node agent stopped", by=self.node, on_node=self.node)
            for i, inc in keys])
        return [r.allocation for r in results if r is not None and r.applied]

    def failed_to_start(self, key: Key, *, error: str) -> bool:
        [r] = self._apply([Change(key[0], START_FAILED, key[1], {"exit_code": -1},
                                  failure=printable(START_ERROR_PREFIX + error)[:OUTPUT_TAIL_CHARS], reason="could not start",
                                  by=self.node, on_node=self.node)])
        return bool(r and r.applied)

    def stop_unstarted(self, key: Key) -> bool:
        """A stop reached the agent while no process existed: stopping -> stopped with no process."""
        [r] = self._apply([Change(key[0], STOPPED, key[1], {"process_exited": True}, reason="no process to stop",
                                  by=self.node, leaf_only=True, on_node=self.node)])
        return bool(r and r.applied)
