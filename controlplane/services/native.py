"""Runs native executors: starts native allocations and hands them the events of their children and watches.

Runs inside supervisor workers. A native allocation has no process: it is
`running` while its executor orchestrates, and ends when the executor says so
(or when it is stopped, once its children have ended). Starting is
idempotent: a redelivered start finishes a claim that was cut short and runs
the executor's `on_start` again (executors must be idempotent).

Executors come from a registry: the ones the assembly point builds (a job's
root, which needs the job store) and plugins found under the entry-point
group `controlplane.executors`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

from controlplane.domain.capabilities import Kind, Verb, default_capability
from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Forbidden, InvalidInput
from controlplane.domain.lifecycle import CLAIM, NATIVE_CRASH, NATIVE_FAIL, NATIVE_SUCCEED, RUN, Move, State
from controlplane.domain.records import AllocationRecord
from controlplane.ports.dispatch import Dispatcher, Key
from controlplane.ports.native import NativeExecutor
from controlplane.ports.store import Change, Hierarchy, Ledger
from controlplane.services.allocations import AllocationService
from controlplane.services.supervisor import SupervisorService

log = logging.getLogger(__name__)
GROUP = "controlplane.executors"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


class NativeExecutors:
    """name -> executor: the built-in ones given by the assembly point, then installed plugins."""

    def __init__(self, builtin: Mapping[str, NativeExecutor] | None = None) -> None:
        self._loaded: dict[str, NativeExecutor] = dict(builtin or {})

    def names(self) -> list[str]:
        return sorted(set(self._loaded) | set(_entry_points()))

    def get(self, name: str, field: str = "native") -> NativeExecutor:
        found = self._loaded.get(name)
        if found is None:
            ep = _entry_points().get(name)
            if ep is None:
                raise InvalidInput(f"unknown native executor {name!r}; installed: {', '.join(self.names()) or 'none'}",
                                   field=field)
            found = self._loaded[name] = ep.load()()
        return found


class NativeStore(Ledger, Hierarchy, Protocol):
    """What running native executors reads and writes."""


class Context:
    """What a native executor may do (ports.native.NativeContext): spawn, stop and watch, end its own allocation."""

    def __init__(self, runner: NativeRunner, allocation: AllocationRecord) -> None:
        self._runner = runner
        self._allocation = allocation
        #: what an allocation's token grants at the API: its own subtree (the incarnation is this record's)
        self._capability = default_capability(Kind.ALLOCATION, allocation.id, role=None, expires_at=math.inf)

    @property
    def principal(self) -> str:
        return f"allocation:{self._allocation.id}#{self._allocation.incarnation}"

    def _require(self, verb: Verb, target: str) -> None:
        """The same rule as an allocation's token at the API: its verbs, on its own subtree only."""
        if target == self._allocation.id:
            return
        lineage = (target, *(v.id for v in self._runner.store.ancestors(allocation_id=target)))
        if not self._capability.covers(verb, lineage):
            raise Forbidden(f"{self.principal} may not {verb.value} {target}: not in its subtree", field="parent")

    @property
    def allocation(self) -> AllocationRecord:
        return self._allocation

    @property
    def config(self) -> dict[str, Any]:
        raw = self._allocation.extra.get("config")
        return dict(json.loads(raw)) if isinstance(raw, str) else dict(raw or {})

    def now(self) -> float:
        return self._runner.clock()

    def spawn(
        self,
        specs: Sequence[dict[str, Any]],
        *,
        request_id: str | None = None,
        parent_id: str | None = None,
        extra: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[AllocationRecord]:
        self._require(Verb.SPAWN, parent_id or self._allocation.id)
        return self._runner.allocations.spawn(parent_id or self._allocation.id, specs, request_id=request_id,
                                              extra=extra, ids=ids, by=self.principal)

    def children(self) -> list[AllocationRecord]:
        return self._runner.supervisor.children_of(self._allocation.id)

    def watch(self, target_id: str) -> None:
        self._runner.allocations.watch(self._allocation.id, target_id)

    def stop(self, allocation_id: str, reason: str) -> None:
        self._require(Verb.STOP, allocation_id)
        self._runner.supervisor.stop(allocation_id, include_root=True, reason=reason, by=self._allocation.id)

    def succeed(self, reason: str) -> bool:
        return self._runner.end(self._allocation, NATIVE_SUCCEED, reason, exit_code=0)

    def fail(self, reason: str) -> bool:
        return self._runner.end(self._allocation, NATIVE_FAIL, reason, exit_code=1)


class NativeRunner:
    def __init__(
        self,
        store: NativeStore,
        dispatcher: Dispatcher,
        allocations: AllocationService,
        supervisor: SupervisorService,
        executors: NativeExecutors,
        *,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.allocations = allocations
        self.supervisor = supervisor
        self.executors = executors
        self.clock = clock

    def start(self, keys: Sequence[Key]) -> None:
        """placed -> starting -> running, then the executor's on_start (again, for a redelivered start)."""
        now = self.clock()
        self.store.transition_many(
            changes=[Change(i, CLAIM, inc, reason="native start", by="supervisor") for i, inc in keys], now=now)
        self.store.transition_many(
            changes=[Change(i, RUN, inc, {"started_at": now}, reason="native executor running", by="supervisor")
                     for i, inc in keys], now=now)
        wanted = dict(keys)
        for a in self.store.get_allocations(allocation_ids=list(wanted)):
            if a.state is not State.RUNNING or a.incarnation != wanted[a.id] or a.executor != "native":
                continue
            executor = self._executor(a)
            if executor is not None:
                self._call(a, partial(executor.on_start, Context(self, a)))

    def on_ended(self, records: Sequence[AllocationRecord]) -> None:
        """After supervision: native parents learn which children ended."""
        by_parent: dict[str, list[AllocationRecord]] = {}
        for a in records:
            by_parent.setdefault(a.parent_id, []).append(a)
        parents = {p.id: p for p in self.store.get_allocations(allocation_ids=list(by_parent))}
        for parent_id, children in by_parent.items():
            parent = parents.get(parent_id)
            if parent is None or parent.executor != "native" or parent.state is not State.RUNNING:
                continue
            executor = self._executor(parent)
            if executor is not None:
                self._call(parent, partial(executor.on_children_ended, Context(self, parent), children))

    def notify(self, allocation: AllocationRecord, children: Sequence[AllocationRecord]) -> None:
        """Tell a running native allocation that allocations it orchestrates (not only its children) ended."""
        executor = self._executor(allocation)
        if executor is not None:
            self._call(allocation, partial(executor.on_children_ended, Context(self, allocation), children))

    def on_watched(self, watchers: dict[str, list[str]], targets: Sequence[AllocationRecord]) -> None:
        ids = sorted({w for ws in watchers.values() for w in ws})
        if not ids:
            return
        natives = {a.id: a for a in self.store.get_allocations(allocation_ids=ids)
                   if a.executor == "native" and a.state is State.RUNNING}
        for target in targets:
            for w in watchers.get(target.id, []):
                a = natives.get(w)
                executor = self._executor(a) if a else None
                if a is not None and executor is not None:
                    self._call(a, partial(executor.on_terminated, Context(self, a), target))

    def end(self, a: AllocationRecord, move: Move, reason: str, *, exit_code: int) -> bool:
        [r] = self.store.transition_many(
            changes=[Change(a.id, move, a.incarnation, {"exit_code": exit_code}, failure=reason, reason=reason, by=a.id)],
            now=self.clock(),
        )
        if r is not None and r.applied:
            self.dispatcher.terminated(keys=[(a.id, a.incarnation)])
            return True
        return False

    def _executor(self, a: AllocationRecord) -> NativeExecutor | None:
        name = a.extra.get("native")
        try:
            return self.executors.get(str(name))
        except Exception as exc:  # noqa: BLE001 - the allocation fails with the reason
            self._crash(a, f"native executor {name!r} unavailable: {exc}")
            return None

    def _call(self, a: AllocationRecord, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - a bug in orchestration code fails its allocation, not the supervisor
            log.exception("native executor of %s failed", a.id)
            self._crash(a, f"native executor error: {type(exc).__name__}: {exc}")

    def _crash(self, a: AllocationRecord, error: str) -> None:
        self.end(a, NATIVE_CRASH, error, exit_code=-1)
