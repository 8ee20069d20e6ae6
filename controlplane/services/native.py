"""Runs native executors: starts native allocations and hands them the events of their children and watches.

Runs inside supervisor workers. A native allocation has no process: it is
`running` while its executor orchestrates, and ends when the executor says so
(or when it is stopped, once its children have ended).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from controlplane.domain.capabilities import Kind, Verb, default_capability
from controlplane.domain.errors import Forbidden
from controlplane.domain.lifecycle import State
from controlplane.domain.records import AllocationRecord
from controlplane.executors import NativeExecutor, load
from graph_schema.store import Change, GraphStore

if TYPE_CHECKING:
    from controlplane.services.control import ControlPlane

log = logging.getLogger(__name__)
Key = tuple[str, int]


class NativeContext:
    """What a native executor may do: spawn, stop and watch allocations, and end its own allocation."""

    def __init__(self, control: ControlPlane, allocation: AllocationRecord) -> None:
        self.control = control
        self.allocation = allocation
        self._capability = default_capability(Kind.ALLOCATION, allocation.id, role=None, expires_at=math.inf)

    @property
    def store(self) -> GraphStore:
        return self.control.store

    @property
    def config(self) -> dict[str, Any]:
        raw = self.allocation.extra.get("config")
        return json.loads(raw) if isinstance(raw, str) else dict(raw or {})

    @property
    def principal(self) -> str:
        return f"allocation:{self.allocation.id}#{self.allocation.incarnation}"

    def _require(self, verb: Verb, target: str) -> None:
        """The same rule as an allocation's token at the API: its verbs, on its own subtree only."""
        if target == self.allocation.id:
            return
        lineage = (target, *(v.id for v in self.store.ancestors(allocation_id=target)))
        if not self._capability.covers(verb, lineage):
            raise Forbidden(f"{self.principal} may not {verb.value} {target}: not in its subtree", field="parent")

    def spawn(self, specs: Sequence[dict[str, Any]], *, request_id: str | None = None, parent_id: str | None = None) -> list[AllocationRecord]:
        self._require(Verb.SPAWN, parent_id or self.allocation.id)
        return self.control.spawn(parent_id or self.allocation.id, specs, request_id=request_id, by=self.principal)

    def children(self) -> list[AllocationRecord]:
        return self.control.supervisor.children_of(self.allocation.id)

    def watch(self, target_id: str) -> None:
        self.control.watch(self.allocation.id, target_id)

    def stop(self, allocation_id: str, reason: str) -> None:
        self._require(Verb.STOP, allocation_id)
        self.control.supervisor.stop(allocation_id, include_root=True, reason=reason, by=self.allocation.id)

    def succeed(self, reason: str) -> bool:
        return self._end(State.SUCCEEDED, reason)

    def fail(self, reason: str) -> bool:
        return self._end(State.FAILED, reason)

    def _end(self, to: State, reason: str) -> bool:
        a = self.allocation
        [r] = self.store.transition_many(
            changes=[Change(a.id, {State.RUNNING: to}, a.incarnation, {"exit_code": 0 if to is State.SUCCEEDED else 1},
                            failure=reason, reason=reason, by=a.id)],
            now=self.control.clock(),
        )
        if r is not None and r.applied:
            self.control.dispatcher.terminated(keys=[(a.id, a.incarnation)])
            return True
        return False


class NativeRunner:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def _executor(self, a: AllocationRecord) -> NativeExecutor | None:
        name = a.extra.get("native")
        try:
            return load(str(name))
        except Exception as exc:  # noqa: BLE001 - the allocation fails with the reason
            self._crash(a, f"native executor {name!r} unavailable: {exc}")
            return None

    def start(self, keys: Sequence[Key]) -> None:
        """placed -> starting -> running, then the executor's on_start."""
        store, now = self.control.store, self.control.clock()
        started = store.transition_many(
            changes=[Change(i, {State.PLACED: State.STARTING}, inc, reason="native start", by="supervisor") for i, inc in keys],
            now=now,
        )
        claimed = [r.allocation for r in started if r is not None and r.applied]
        running = store.transition_many(
            changes=[Change(a.id, {State.STARTING: State.RUNNING}, a.incarnation, {"started_at": now},
                            reason="native executor running", by="supervisor") for a in claimed],
            now=now,
        )
        for r in running:
            if r is None or not r.applied:
                continue
            a = r.allocation
            executor = self._executor(a)
            if executor is not None:
                self._call(a, lambda e=executor, ctx=NativeContext(self.control, a): e.on_start(ctx))

    def on_ended(self, records: Sequence[AllocationRecord]) -> None:
        """After supervision: native parents (and jobs) learn which children ended."""
        for a in records:
            if a.extra.get("root_of"):
                self.control.jobs.root_ended(a)
        by_parent: dict[str, list[AllocationRecord]] = {}
        jobs: set[str] = set()
        for a in records:
            by_parent.setdefault(a.parent_id, []).append(a)
            if a.extra.get("job_id"):
                jobs.add(str(a.extra["job_id"]))
        parents = {p.id: p for p in self.control.store.get_allocations(allocation_ids=list(by_parent))}
        for parent_id, children in by_parent.items():
            parent = parents.get(parent_id)
            if parent is None or parent.executor != "native" or parent.state is not State.RUNNING:
                continue
            if parent.extra.get("root_of"):
                jobs.discard(str(parent.extra["root_of"]))
            executor = self._executor(parent)
            if executor is not None:
                self._call(parent, lambda e=executor, p=parent, c=children: e.on_children_ended(NativeContext(self.control, p), c))
        for job_id in jobs:  # a nested task of a job ended: the job's root advances
            job = self.control.store.get_job(job_id=job_id)
            root = self.control.store.get_allocation(allocation_id=job.root_id) if job and job.root_id else None
            if root is not None and root.state is State.RUNNING:
                executor = self._executor(root)
                if executor is not None:
                    self._call(root, lambda e=executor, r=root: e.on_children_ended(NativeContext(self.control, r), []))

    def on_watched(self, watchers: dict[str, list[str]], targets: Sequence[AllocationRecord]) -> None:
        ids = sorted({w for ws in watchers.values() for w in ws})
        if not ids:
            return
        natives = {a.id: a for a in self.control.store.get_allocations(allocation_ids=ids)
                   if a.executor == "native" and a.state is State.RUNNING}
        for target in targets:
            for w in watchers.get(target.id, []):
                a = natives.get(w)
                executor = self._executor(a) if a else None
                if a is not None and executor is not None:
                    self._call(a, lambda e=executor, a=a, t=target: e.on_terminated(NativeContext(self.control, a), t))

    def _call(self, a: AllocationRecord, hook: Any) -> None:
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - a bug in orchestration code fails its allocation, not the supervisor
            log.exception("native executor of %s failed", a.id)
            self._crash(a, f"native executor error: {type(exc).__name__}: {exc}")

    def _crash(self, a: AllocationRecord, error: str) -> None:
        [r] = self.control.store.transition_many(
            changes=[Change(a.id, {State.RUNNING: State.FAILED, State.STARTING: State.FAILED, State.PLACED: State.FAILED},
                            a.incarnation, {"exit_code": -1}, failure=error, reason=error, by="supervisor")],
            now=self.control.clock(),
        )
        if r is not None and r.applied:
            self.control.dispatcher.terminated(keys=[(a.id, a.incarnation)])
