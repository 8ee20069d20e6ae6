"""Creating, stopping and watching allocations: the parent rule, placement, reservation, dispatch.

An allocation is only ever created under a Node or a live Allocation, its
parent. Placement goes through the one `Placer`; the store re-checks every
precondition in the same atomic statement as the creation, and a lost race
is placed again with fresh candidates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, InvalidInput, NoCapacity, NotFound
from controlplane.domain.lifecycle import TERMINAL, State
from controlplane.domain.placement import Demand
from controlplane.domain.records import AllocationRecord, Event
from controlplane.domain.specs import AllocationSpec, parse
from controlplane.domain.supervision import DEFAULT_POLICY
from controlplane.domain.text import REASON_MAX, REQUEST_ID_MAX, Id, Line, Text, checked
from controlplane.domain.vocabulary import Label
from controlplane.ports.dispatch import Dispatcher
from controlplane.ports.native import NativeExecutor
from controlplane.ports.store import CreateRefused, Hierarchy, History, Ledger, NewAllocation, Topology
from controlplane.services.ids import new_ids
from controlplane.services.placement import Placer
from controlplane.services.supervisor import SupervisorService

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
PLACEMENT_RETRIES = 8


class AllocationStore(Ledger, Hierarchy, History, Topology, Protocol):
    """What creating, stopping and watching read and write."""


class AllocationService:
    def __init__(
        self,
        store: AllocationStore,
        dispatcher: Dispatcher,
        placer: Placer,
        supervisor: SupervisorService,
        natives: Callable[[str, str], NativeExecutor],
        *,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        """`natives(name, field)`: the native executor of that name (InvalidInput naming `field` when unknown)."""
        self.store = store
        self.dispatcher = dispatcher
        self.placer = placer
        self.supervisor = supervisor
        self.natives = natives
        self.clock = clock

    @checked(parent_id=Id("parent"), request_id=Line("requestId", max_length=REQUEST_ID_MAX), ids=Id("ids"))
    def spawn(
        self,
        parent_id: str,
        specs: Sequence[AllocationSpec | Mapping[str, Any]],
        *,
        request_id: str | None = None,
        field: str = "specs",
        extra: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        by: str | None = None,
    ) -> list[AllocationRecord]:
        """Create allocations under `parent_id` (a Node or an Allocation): placed, reserved, dispatched.

        `extra`: properties recorded with each allocation by orchestration code (job and task ids);
        `ids`: the allocation ids to use (orchestration code derives them from what they run, so a
        repeat creates nothing twice); `by`: the principal asking, recorded on the allocations and their events.
        """
        if not specs:
            raise InvalidInput("give at least one allocation spec", field=field)
        if len(specs) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} allocations per request", field=field)
        single = len(specs) == 1 and field == "spec"

        def where(i: int) -> str:
            return field if single else f"{field}[{i}]"

        parsed = [parse(AllocationSpec, s, field=where(i)) for i, s in enumerate(specs)]
        for i, s in enumerate(parsed):
            if s.executor == "native":
                self.natives(str(s.native), f"{where(i)}.native").validate(dict(s.config))
        origin = self._check_parent(parent_id)
        for i, s in enumerate(parsed):
            if s.node is not None and self.store.get_node(node_id=s.node) is None:
                raise NotFound(f"no node {s.node!r}", field=f"{where(i)}.node")
        if ids is not None and len(ids) != len(parsed):
            raise InvalidInput("one id per spec", field="ids")
        derived = ids is not None or request_id is not None
        ids = list(ids) if ids is not None else new_ids(len(parsed), request_id=request_id, parent_id=parent_id)
        if derived:
            # a repeat of a request that committed: answer what it created, even if the nodes are full now
            existing = self.store.get_allocations(allocation_ids=ids)
            if len(existing) == len(ids):
                return sorted(existing, key=lambda a: a.extra.get("seq", 0))
        demands = [
            Demand(
                resources=s.resources.to_resources(),
                node_id=s.node,
                labels=s.label_list(),
                max_rtt_ms=s.max_rtt_ms,
                spread_key=s.spread_key,
            )
            for s in parsed
        ]
        created: list[AllocationRecord] | None = None
        for attempt in range(PLACEMENT_RETRIES):
            placements = self.placer.place(demands, origin, field=field)
            new = [
                NewAllocation(
                    id=ids[i],
                    name=s.name,
                    executor=s.executor,
                    argv=tuple(s.argv),
                    env_json=json.dumps(s.env, sort_keys=True),
                    cpu=s.resources.cpu_milli,
                    memory=s.resources.memory_mib,
                    gpus=s.resources.gpus,
                    gpu_model=s.resources.gpu_model,
                    node_id=p.node_id,
                    gpu_ids=p.gpu_ids,
                    grace_period_s=s.grace_period_s,
                    seq=i,
                    pin=s.node,
                    node_labels=s.label_list(),
                    max_rtt_ms=s.max_rtt_ms,
                    spread_key=s.spread_key,
                    extra={
                        "restart_type": s.restart.value,
                        "supervision": s.supervision.model_dump_json() if s.supervision else None,
                        "child_policy": (s.supervision or DEFAULT_POLICY).child_policy.value,
                        "restart_log": [],
                        "backoff_level": 0,
                        "restarts": 0,
                        "native": s.native,
                        "config": json.dumps(s.config, sort_keys=True) if s.config else None,
                        **(dict(extra[i]) if extra else {}),
                        **({"created_by": by} if by else {}),
                    },
                )
                for i, (s, p) in enumerate(zip(parsed, placements, strict=True))
            ]
            try:
                created = self.store.create_allocations(parent_id=parent_id, allocations=new, now=self.clock())
                break
            except CreateRefused as refused:
                if refused.reason == CreateRefused.PARENT_MISSING:
                    raise NotFound(f"no node or allocation {parent_id!r}", field="parent") from None
                if refused.reason == CreateRefused.PARENT_NOT_LIVE:
                    raise Conflict(f"parent {refused.detail}; it cannot create children", field="parent") from None
                if refused.reason == CreateRefused.DUPLICATE:
                    raise Conflict(f"allocations already exist: {refused.detail}", field="ids") from None
                log.debug("placement lost a race (attempt %d): %s", attempt + 1, refused)
        if created is None:
            raise NoCapacity("capacity changed under concurrent placements; try again", field=field)
        self._dispatch_runs(created)
        return created

    def _check_parent(self, parent_id: str) -> str:
        """The parent must exist and accept children; returns the node it is on (itself, for a Node)."""
        label = self.store.actor_label(actor_id=parent_id)
        if label is None or label == Label.GPU.value:
            raise NotFound(f"no node or allocation {parent_id!r}", field="parent")
        if label == Label.ALLOCATION.value:
            parent = self.store.get_allocation(allocation_id=parent_id)
            if parent is None:
                raise NotFound(f"no node or allocation {parent_id!r}", field="parent")
            if parent.state in TERMINAL | {State.STOPPING}:
                raise Conflict(f"parent {parent_id} is {parent.state.value}; it cannot create children", field="parent")
            return parent.node_id
        return parent_id

    def _dispatch_runs(self, allocations: Sequence[AllocationRecord]) -> None:
        by_node: dict[str, list[tuple[str, int]]] = {}
        natives = [(a.id, a.incarnation) for a in allocations if a.state is State.PLACED and a.executor == "native"]
        if natives:
            self.dispatcher.start_native(keys=natives)
        for a in allocations:
            if a.state is State.PLACED and a.executor == "process":
                by_node.setdefault(a.node_id, []).append((a.id, a.incarnation))
        for node_id, items in by_node.items():
            try:
                self.dispatcher.run(node_id=node_id, items=items)
            except Exception:  # the reconciler re-dispatches allocations stuck in `placed`
                log.exception("could not dispatch %d allocations to %s", len(items), node_id)

    @checked(allocation_id=Id("id"), reason=Text("reason", max_length=REASON_MAX))
    def stop(self, allocation_id: str, *, reason: str = "stop requested", by: str = "user") -> AllocationRecord:
        """Stop an allocation and its subtree, children first; unstarted ones end at once; a pending restart is cancelled."""
        current = self._get(allocation_id)
        if current.state not in TERMINAL:
            self.supervisor.stop(allocation_id, include_root=True, reason=reason, by=by)
        elif current.extra.get("restart_at") is not None:
            self.store.set_fields(allocation_id=current.id, incarnation=current.incarnation,
                                  fields={"restart_at": None, "waiting": None})
            self.store.record_events(events=[Event(
                id=f"{current.id}:{current.incarnation}:restart-cancelled", kind="decision", allocation_id=current.id,
                at=self.clock(), incarnation=current.incarnation, reason=f"restart cancelled: {reason}", by=by,
            )])
        return self._get(allocation_id)

    @checked(watcher_id=Id("watcher"), target_id=Id("target"))
    def watch(self, watcher_id: str, target_id: str) -> AllocationRecord:
        """Death watch: when target terminates, watcher gets a Terminated event (at once if it already has)."""
        if watcher_id == target_id:
            raise InvalidInput("an allocation cannot watch itself", field="target")
        for field, actor in (("watcher", watcher_id), ("target", target_id)):
            if self.store.get_allocation(allocation_id=actor) is None:
                raise NotFound(f"no allocation {actor!r}", field=field)
        self.store.watch(watcher_id=watcher_id, target_id=target_id, now=self.clock())
        target = self._get(target_id)
        if target.state in TERMINAL:
            self.supervisor.notify_watchers([target], self.clock())
        return target

    @checked(watcher_id=Id("watcher"), target_id=Id("target"))
    def unwatch(self, watcher_id: str, target_id: str) -> bool:
        return self.store.unwatch(watcher_id=watcher_id, target_id=target_id)

    def _get(self, allocation_id: str) -> AllocationRecord:
        found = self.store.get_allocation(allocation_id=allocation_id)
        if found is None:
            raise NotFound(f"no allocation {allocation_id!r}", field="id")
        return found
