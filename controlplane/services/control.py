"""The control plane's use cases: register nodes, spawn and stop allocations, ask the graph.

Written against the GraphStore and Dispatcher interfaces only. Placement is a
pure function over a capacity snapshot; the store re-checks it atomically and
a lost race is retried with a fresh snapshot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from collections.abc import Callable, Collection, Sequence
from typing import Any

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, InvalidInput, NoCapacity, NotFound
from controlplane.domain.lifecycle import TERMINAL, State
from controlplane.domain.placement import Demand, Placement, place
from controlplane.domain.resources import NodeCapacity
from controlplane.domain.records import (
    AllocationRecord,
    Event,
    GpuRecord,
    NeighborRecord,
    NodeRecord,
    RawResult,
    Vertex,
)
from controlplane.domain.specs import AllocationSpec, NodeSpec, parse
from controlplane.domain.supervision import DEFAULT_POLICY, SupervisionPolicy
from controlplane.domain.traversal import TraversalSpec
from controlplane import executors
from controlplane.services.ids import new_ids
from controlplane.services.jobs import JobService
from controlplane.services.native import NativeRunner
from controlplane.services.supervisor import ControlDispatcher, SupervisorService
from graph_schema.store import CreateRefused, GraphStore, NewAllocation
from graph_schema.vocabulary import Label

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
MAX_PAGE = 1_000
PLACEMENT_RETRIES = 8


class ControlPlane:
    def __init__(
        self,
        store: GraphStore,
        dispatcher: ControlDispatcher | None,
        *,
        clock: Callable[[], float] = wall_clock,
        notify: Callable[[], None] | None = None,
    ) -> None:
        """`dispatcher` None: no node agents; supervision runs in this process (tests, tools)."""
        self.store = store
        self.clock = clock
        self.dispatcher: ControlDispatcher = dispatcher or InProcessDispatcher(self)
        self.native = NativeRunner(self)
        self.jobs = JobService(self, clock=clock)
        self.supervisor = SupervisorService(
            store, self.dispatcher, clock=clock, notify=notify,
            on_ended=self.native.on_ended, on_watched=self.native.on_watched,
        )

    # --- nodes -------------------------------------------------------------------------
    def register_node(self, spec: NodeSpec | dict[str, Any]) -> NodeRecord:
        node = parse(NodeSpec, spec, field="node")
        return self.store.register_node(spec=node, now=self.clock())

    def heartbeat(self, node_id: str) -> None:
        if not self.store.heartbeat(node_id=node_id, now=self.clock()):
            raise NotFound(f"no node {node_id!r}", field="node")

    def connect_neighbors(self, a: str, b: str, *, rtt_ms: float, bandwidth: float = 0.0) -> None:
        if a == b:
            raise InvalidInput("a node cannot be its own neighbour", field="b")
        if not 0 <= rtt_ms <= 600_000:
            raise InvalidInput("must be between 0 and 600000 ms", field="rttMs")
        if not 0 <= bandwidth <= 1e15:
            raise InvalidInput("must be between 0 and 1e15", field="bandwidth")
        for field, node_id in (("a", a), ("b", b)):
            if self.store.get_node(node_id=node_id) is None:
                raise NotFound(f"no node {node_id!r}", field=field)
        self.store.connect_neighbors(a=a, b=b, rtt_ms=rtt_ms, bandwidth=bandwidth)

    def node(self, node_id: str) -> NodeRecord:
        found = self.store.get_node(node_id=node_id)
        if found is None:
            raise NotFound(f"no node {node_id!r}", field="id")
        return found

    def nodes(self, *, after: str | None = None, limit: int = 100, status: str | None = None) -> list[NodeRecord]:
        return self.store.list_nodes(after=after, limit=_page(limit), status=status)

    def neighbors(self, node_id: str) -> list[NeighborRecord]:
        return self.store.neighbors(node_id=node_id)

    def gpus(self, node_id: str) -> list[GpuRecord]:
        return self.store.gpus(node_id=node_id)

    # --- allocations -------------------------------------------------------------------
    def spawn(
        self,
        parent_id: str,
        specs: Sequence[AllocationSpec | dict[str, Any]],
        *,
        request_id: str | None = None,
        field: str = "specs",
        extra: Sequence[dict[str, Any]] | None = None,
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
        parsed = [parse(AllocationSpec, s, field=field if single else f"{field}[{i}]") for i, s in enumerate(specs)]
        for i, s in enumerate(parsed):
            if s.executor == "native":
                where = field if single else f"{field}[{i}]"
                executors.load(str(s.native), field=f"{where}.native").validate(dict(s.config))
        origin = self._check_parent(parent_id)
        demands = [
            Demand(
                resources=s.resources.to_resources(),
                node_id=s.node,
                labels=tuple(sorted(f"{k}={v}" for k, v in s.node_labels.items())),
                max_rtt_ms=s.max_rtt_ms,
                spread_key=s.spread_key,
            )
            for s in parsed
        ]
        for i, s in enumerate(parsed):
            if s.node is not None and self.store.get_node(node_id=s.node) is None:
                raise NotFound(f"no node {s.node!r}", field=f"{field}.node" if single else f"{field}[{i}].node")
        if ids is not None and len(ids) != len(parsed):
            raise InvalidInput("one id per spec", field="ids")
        derived = ids is not None or request_id is not None
        ids = list(ids) if ids is not None else new_ids(len(parsed), request_id=request_id, parent_id=parent_id)
        if derived:
            # a repeat of a request that committed: answer what it created, even if the nodes are full now
            existing = self.store.get_allocations(allocation_ids=ids)
            if len(existing) == len(ids):
                return sorted(existing, key=lambda a: a.extra.get("seq", 0))
        created: list[AllocationRecord] | None = None
        for attempt in range(PLACEMENT_RETRIES):
            placements = self._place(demands, origin, field=field)
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
                    extra={
                        "restart_type": s.restart.value,
                        "supervision": s.supervision.model_dump_json() if s.supervision else None,
                        "child_policy": (s.supervision or DEFAULT_POLICY).child_policy.value,
                        "restart_log": [],
                        "backoff_level": 0,
                        "restarts": 0,
                        "native": s.native,
                        "spread_key": s.spread_key,
                        "config": json.dumps(s.config, sort_keys=True) if s.config else None,
                        **(dict(extra[i]) if extra else {}),
                        **({"created_by": by} if by else {}),
                    },
                )
                for i, (s, p) in enumerate(zip(parsed, placements))
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

    def _place(self, demands: Sequence[Demand], origin: str, *, field: str) -> list[Placement]:
        """Candidates by graph traversal (room, GPUs, labels, neighbours within RTT), then the pure placement."""
        rtt: dict[str, float] = {}
        if any(d.max_rtt_ms is not None for d in demands):
            rtt = {origin: 0.0, **{n.node_id: n.rtt_ms for n in self.store.neighbors(node_id=origin)}}
        keys = sorted({d.spread_key for d in demands if d.spread_key})
        spread = self.store.spread_counts(keys=keys) if keys else {}
        shapes: dict[tuple[object, ...], int] = {}
        for d in demands:
            r = d.resources
            shape = (r.cpu_milli, r.memory_mib, r.gpus, r.gpu_model, d.labels, d.node_id, d.max_rtt_ms)
            shapes[shape] = shapes.get(shape, 0) + 1
        nodes: dict[str, NodeCapacity] = {}
        complete = True  # every node that could take one of these demands is in `nodes`
        for (cpu, memory, gpus, model, labels, pinned, near), count in shapes.items():
            ids = [pinned] if pinned else ([n for n, ms in rtt.items() if ms <= near] if near is not None else None)
            found = self.store.candidates(cpu=cpu, memory=memory, gpus=gpus, gpu_model=model, labels=labels,
                                          node_ids=ids, limit=count + 16)
            complete = complete and len(found) < count + 16
            nodes.update((c.node_id, c) for c in found)
        try:
            return place(demands, list(nodes.values()), rtt_ms=rtt, spread=spread, field=field)
        except NoCapacity:
            if complete:
                raise
            # a batch bigger than the best candidates hold: place over every ready node
            return place(demands, self.store.node_capacities(), rtt_ms=rtt, spread=spread, field=field)

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

    def stop(self, allocation_id: str, *, reason: str = "stop requested", by: str = "user") -> AllocationRecord:
        """Stop an allocation and its subtree, children first; unstarted ones end at once."""
        current = self.allocation(allocation_id)
        if current.state not in TERMINAL:
            self.supervisor.stop(allocation_id, include_root=True, reason=reason, by=by)
        return self.allocation(allocation_id)

    def watch(self, watcher_id: str, target_id: str) -> AllocationRecord:
        """Death watch: when target terminates, watcher gets a Terminated event (at once if it already has)."""
        if watcher_id == target_id:
            raise InvalidInput("an allocation cannot watch itself", field="target")
        for field, actor in (("watcher", watcher_id), ("target", target_id)):
            if self.store.get_allocation(allocation_id=actor) is None:
                raise NotFound(f"no allocation {actor!r}", field=field)
        self.store.watch(watcher_id=watcher_id, target_id=target_id, now=self.clock())
        target = self.allocation(target_id)
        if target.state in TERMINAL:
            self.supervisor.notify_watchers([target], self.clock())
        return target

    def unwatch(self, watcher_id: str, target_id: str) -> bool:
        return self.store.unwatch(watcher_id=watcher_id, target_id=target_id)

    def events(self, allocation_id: str | None = None, *, since: float | None = None, limit: int = 100) -> list[Event]:
        if not 1 <= limit <= 10_000:
            raise InvalidInput("must be between 1 and 10000", field="first")
        if allocation_id is not None and self.store.actor_label(actor_id=allocation_id) is None:
            raise NotFound(f"no node or allocation {allocation_id!r}", field="allocation")
        return self.store.events(allocation_id=allocation_id, since=since, limit=limit)

    def raw_query(self, text: str, *, timeout_s: float = 10.0, limit: int = 1000) -> RawResult:
        """A read-only query in the engine's own language (Cypher on FalkorDB/Neo4j, Gremlin on Gremlin)."""
        check_raw_query(text, timeout_s, limit)
        return self.store.raw_query(text=text, timeout_s=timeout_s, limit=limit)

    def set_policy(self, actor_id: str, policy: SupervisionPolicy | dict[str, Any]) -> None:
        """Change how a node or a live allocation supervises its children."""
        parsed = parse(SupervisionPolicy, policy, field="policy")
        label = self.store.actor_label(actor_id=actor_id)
        if label not in (Label.NODE.value, Label.ALLOCATION.value):
            raise NotFound(f"no node or allocation {actor_id!r}", field="id")
        if label == Label.ALLOCATION.value:
            a = self.allocation(actor_id)
            if a.state in TERMINAL or a.state is State.STOPPING:
                raise Conflict(f"allocation {actor_id} is {a.state.value}; its policy can no longer change", field="id")
        self.store.set_actor_fields(
            actor_id=actor_id,
            fields={"supervision": parsed.model_dump_json(), "child_policy": parsed.child_policy.value},
        )

    def allocation(self, allocation_id: str) -> AllocationRecord:
        found = self.store.get_allocation(allocation_id=allocation_id)
        if found is None:
            raise NotFound(f"no allocation {allocation_id!r}", field="id")
        return found

    def allocations(
        self, *, after: str | None = None, limit: int = 100, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]:
        if state is not None and state not in {s.value for s in State}:
            raise InvalidInput(f"unknown state {state!r}", field="state")
        return self.store.list_allocations(after=after, limit=_page(limit), state=state, node_id=node_id)

    def children(self, parent_id: str, *, after: str | None = None, limit: int = 100) -> list[AllocationRecord]:
        return self.store.children(parent_id=parent_id, after=after, limit=_page(limit))

    def descendants(
        self, root_id: str, *, max_depth: int = 64, limit: int = 10_000, fields: Collection[str] | None = None
    ) -> list[AllocationRecord]:
        """`fields`: the allocation properties the caller will read (a projection; None: all)."""
        if not 1 <= max_depth <= 256:
            raise InvalidInput("must be between 1 and 256", field="maxDepth")
        if not 1 <= limit <= 100_000:
            raise InvalidInput("must be between 1 and 100000", field="first")
        return self.store.descendants(root_id=root_id, max_depth=max_depth, limit=limit, fields=fields)

    def ancestors(self, allocation_id: str) -> list[Vertex]:
        return self.store.ancestors(allocation_id=allocation_id)

    def traverse(self, spec: TraversalSpec) -> list[Vertex]:
        label = self.store.actor_label(actor_id=spec.start_id)
        if label is None:
            raise NotFound(f"no vertex with id {spec.start_id!r}", field="from")
        return self.store.traverse(spec=replace(spec, start_label=Label(label)))


RAW_QUERY_MAX_CHARS = 20_000
RAW_QUERY_MAX_ROWS = 10_000
RAW_QUERY_MAX_TIMEOUT_S = 60.0


def check_raw_query(text: str, timeout_s: float, limit: int) -> None:
    if not text or not text.strip():
        raise InvalidInput("must not be empty", field="query")
    if len(text) > RAW_QUERY_MAX_CHARS:
        raise InvalidInput(f"at most {RAW_QUERY_MAX_CHARS} characters", field="query")
    if not 0 < timeout_s <= RAW_QUERY_MAX_TIMEOUT_S:
        raise InvalidInput(f"must be between 0 and {RAW_QUERY_MAX_TIMEOUT_S:g} seconds", field="timeoutS")
    if not 1 <= limit <= RAW_QUERY_MAX_ROWS:
        raise InvalidInput(f"must be between 1 and {RAW_QUERY_MAX_ROWS}", field="limit")


class InProcessDispatcher:
    """Supervision without a broker: terminations and restarts handled at once in this process.

    No node agents: nothing runs processes, so `run` and `stop` have no one to tell.
    """

    MAX_RESTART_POLLS = 100

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._polls = 0

    def run(self, *, node_id: str, items: Sequence[tuple[str, int]]) -> None:
        return None

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        return None

    def terminated(self, *, keys: Sequence[tuple[str, int]]) -> None:
        self._control.supervisor.on_terminated(keys)

    def start_native(self, *, keys: Sequence[tuple[str, int]]) -> None:
        self._control.native.start(keys)

    def restart(self, *, parent_id: str, items: Sequence[tuple[str, int, int]], reason: str, countdown: float) -> None:
        # No delayed delivery here: restart at once (a subtree still stopping re-schedules, bounded).
        self._polls += 1
        if self._polls <= self.MAX_RESTART_POLLS:
            self._control.supervisor.restart(parent_id, items, reason)
        self._polls -= 1


def _page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}", field="first")
    return limit
