"""The graph store, as the roles its callers need.

Every state change is one atomic request with its precondition inside it and is
idempotent when repeated (Celery delivers at least once; the Neo4j driver
reruns transaction functions). Methods are keyword-only so call sites read as
sentences. An engine adapter (graph_schema/) implements every role; the
conformance suite in tests/ runs each behaviour on each engine.

| role | for | who uses it |
| --- | --- | --- |
| Topology | nodes, GPUs, neighbour links | node service, node agents, placement, queries |
| PlacementReads | candidate nodes, spread counts, what nodes are (why nothing fits) | the placer, jobs |
| Ledger | creating, moving, restarting allocations; watches; decisions | allocations, supervisor, agents, native runner |
| Hierarchy | reading allocations and the PARENT_OF tree | nearly everyone |
| History | the ordered events | supervisor, queries |
| Repair | what the reaper and the reconciler look for | repair |
| Retention | pruning old events and ended allocations in small batches | retention |
| Admin | schema, health, raw read-only queries | wiring, queries, tests |
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.domain.lifecycle import Move, State
from controlplane.domain.placement import NodeInventory
from controlplane.domain.records import (
    AllocationRecord,
    Event,
    GpuRecord,
    NeighborRecord,
    NodeRecord,
    RawResult,
    TransitionResult,
    Vertex,
)
from controlplane.domain.resources import NodeCapacity
from controlplane.domain.specs import NodeSpec
from controlplane.domain.traversal import TraversalSpec


@dataclass(frozen=True, slots=True)
class NewAllocation:
    """An allocation about to be created, already placed on a node by the placer.

    `pin`, `node_labels` and `max_rtt_ms` are its placement constraints, stored with it so that
    every restart is placed by the same rules as the spawn.
    """

    id: str
    name: str
    executor: str
    argv: tuple[str, ...]
    env_json: str
    cpu: int
    memory: int
    gpus: int
    gpu_model: str | None
    node_id: str
    gpu_ids: tuple[str, ...]
    grace_period_s: float
    seq: int
    pin: str | None = None
    node_labels: tuple[str, ...] = ()
    max_rtt_ms: float | None = None
    spread_key: str | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One guarded transition: the current state picks its step of `move`, or the change is refused."""

    allocation_id: str
    move: Move
    incarnation: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: the error recorded when the move ends in `failed`
    failure: str | None = None
    #: why, and who decided: recorded on the transition's event
    reason: str | None = None
    by: str | None = None
    #: a move out of `stopping` only if no child is live (a parent is stopped only after its subtree)
    leaf_only: bool = False
    #: node restriction (a node agent's report): a move only of a process allocation placed on this node (native
    #: ones run in supervisors, never on an agent)
    on_node: str | None = None


@dataclass(frozen=True, slots=True)
class RestartItem:
    """A terminal incarnation to restart as incarnation + 1 on `node_id` (already placed by the placer)."""

    allocation_id: str
    from_incarnation: int
    node_id: str
    gpu_ids: tuple[str, ...]
    cpu: int
    memory: int
    backoff_level: int


@dataclass(frozen=True, slots=True)
class ToStop:
    allocation_id: str
    state: State
    incarnation: int
    depth: int


def node_demands(items: Sequence[NewAllocation] | Sequence[RestartItem]) -> list[dict[str, Any]]:
    """What a batch asks of each node (cpu, memory, the GPUs picked there), one entry per node in id order:
    the order every engine locks and checks nodes in."""
    demands: dict[str, dict[str, Any]] = {}
    for it in items:
        d = demands.setdefault(it.node_id, {"node_id": it.node_id, "cpu": 0, "memory": 0, "gpu_ids": []})
        d["cpu"] += it.cpu
        d["memory"] += it.memory
        d["gpu_ids"].extend(it.gpu_ids)
    return [demands[k] for k in sorted(demands)]


class CreateRefused(Exception):
    """The atomic create's precondition did not hold; `reason` says which one."""

    PARENT_MISSING = "parent_missing"
    PARENT_NOT_LIVE = "parent_not_live"
    NO_CAPACITY = "no_capacity"
    STALE = "stale"  # a restart of an incarnation that is not the current terminal one
    DUPLICATE = "duplicate"  # some (not all) of the ids already exist

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Topology(Protocol):
    def register_node(self, *, spec: NodeSpec, now: float, identity: str | None = None) -> NodeRecord | None:
        """Create or update the node. `identity`: the node credential registering it; a node bound to another
        identity is refused (None, nothing written), an unbound one is bound to it. None: an operator's
        registration, which keeps the node's identity as it is."""

    def heartbeat(self, *, node_id: str, now: float) -> str | None:
        """Record a heartbeat; returns the node's status (None: no such node)."""

    def connect_neighbors(self, *, a: str, b: str, rtt_ms: float, bandwidth: float) -> bool: ...

    def set_node_scheduling(self, *, node_id: str, cordoned: bool, drain: bool) -> NodeRecord | None:
        """Cordon or uncordon; `drain` also marks a ready node `draining` (uncordon makes it `ready` again)."""

    def deregister_node(self, *, node_id: str) -> int | None:
        """Delete a node with no live work (placed on it or created by it) and its GPUs: 0. With live work,
        nothing is deleted and the count comes back; None when there is no such node."""

    def get_node(self, *, node_id: str) -> NodeRecord | None: ...

    def list_nodes(self, *, after: str | None, limit: int, status: str | None = None) -> list[NodeRecord]: ...

    def neighbors(self, *, node_id: str) -> list[NeighborRecord]: ...

    def gpus(self, *, node_id: str) -> list[GpuRecord]: ...


class PlacementReads(Protocol):
    def neighbors(self, *, node_id: str) -> list[NeighborRecord]: ...

    def candidates(
        self, *, cpu: int, memory: int, gpus: int, gpu_model: str | None, labels: Sequence[str],
        node_ids: Sequence[str] | None, limit: int,
    ) -> list[NodeCapacity]:
        """Ready nodes with room for one such demand, most free cpu first (placement as a traversal)."""

    def spread_counts(self, *, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        """(spread key, node id) -> live allocations with that key on that node."""

    def node_inventory(self, *, labels: Sequence[str], node_ids: Sequence[str] | None, limit: int) -> list[NodeInventory]:
        """Nodes carrying every label (and among `node_ids` when given), whatever their status, most cpu first:
        what they are and what they have free (why a placement failed)."""


class Hierarchy(Protocol):
    def get_allocation(self, *, allocation_id: str) -> AllocationRecord | None: ...

    def get_allocations(self, *, allocation_ids: Sequence[str]) -> list[AllocationRecord]: ...

    def list_allocations(
        self, *, after: str | None, limit: int, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]: ...

    def children(self, *, parent_id: str, after: str | None, limit: int) -> list[AllocationRecord]: ...

    def descendants(
        self, *, root_id: str, max_depth: int, limit: int, fields: Collection[str] | None = None
    ) -> list[AllocationRecord]:
        """`fields`: read only these properties (plus the core ones); the rest of each record keeps defaults."""

    def ancestors(self, *, allocation_id: str) -> list[Vertex]:
        """Parent first, up to and including the root Node."""

    def actor_label(self, *, actor_id: str) -> str | None:
        """'Node', 'Allocation', 'Gpu' or None: what kind of vertex has this id."""

    def traverse(self, *, spec: TraversalSpec) -> list[Vertex]: ...

    def live_children(self, *, parent_ids: Sequence[str]) -> dict[str, int]:
        """Live children keeping each parent from ending (an abandoning parent waits for none)."""

    def subtree_to_stop(self, *, root_id: str, include_root: bool) -> list[ToStop]:
        """Live allocations under root (through cascading parents), deepest first."""

    def watchers(self, *, target_ids: Sequence[str]) -> dict[str, list[str]]: ...


class Ledger(Protocol):
    def create_allocations(self, *, parent_id: str, allocations: Sequence[NewAllocation], now: float) -> list[AllocationRecord]:
        """Reserve capacity and GPUs on each node and create every allocation under parent, all or nothing.

        Raises CreateRefused when a precondition fails (nothing is written). Repeating a
        call that already committed returns the allocations it created.
        """

    def transition_many(self, *, changes: Sequence[Change], now: float) -> list[TransitionResult | None]:
        """Apply many guarded transitions in one request; one result per change, in order.

        Leaving the states that hold resources releases them in the same request. None when
        the allocation does not exist; `applied` is False when the precondition failed.
        """

    def restart_allocations(
        self, *, parent_id: str, items: Sequence[RestartItem], restart_log: Sequence[float], reason: str, now: float
    ) -> list[AllocationRecord]:
        """Start a new incarnation of each item, all or nothing; raise CreateRefused when a precondition fails."""

    def record_decision(
        self, *, parent_id: str, event: Event, restart_log: Sequence[float] | None, restart_at: Mapping[str, float]
    ) -> tuple[Event, bool]:
        """Record a supervision decision once, with the parent's new restart log and when each child restarts.

        One request: a repeat (the event id exists) changes nothing. Returns the recorded event and
        whether this call recorded it.
        """

    def set_fields(self, *, allocation_id: str, incarnation: int | None, fields: dict[str, Any]) -> AllocationRecord | None: ...

    def set_actor_fields(self, *, actor_id: str, fields: dict[str, Any]) -> None: ...

    def mark_orphans(self, *, parent_id: str, now: float) -> list[str]: ...

    def mark_node_lost(self, *, node_id: str, heartbeat_before: float, now: float) -> list[AllocationRecord] | None:
        """Declare the node lost and its live allocations lost; None when it is not (or no longer) stale."""

    def watch(self, *, watcher_id: str, target_id: str, now: float) -> str | None:
        """Returns the target's state, None when either does not exist."""

    def unwatch(self, *, watcher_id: str, target_id: str) -> bool: ...

    def record_events(self, *, events: Sequence[Event]) -> None:
        """Idempotent by event id."""


class History(Protocol):
    def record_events(self, *, events: Sequence[Event]) -> None:
        """Idempotent by event id."""

    def events(self, *, allocation_id: str | None, since: float | None, limit: int) -> list[Event]: ...


class Repair(Protocol):
    def watched_nodes(self) -> list[str]:
        """Nodes the reaper watches: those `ready` or `draining`."""

    def stale_nodes(self, *, heartbeat_before: float) -> list[str]:
        """Watched nodes whose graph heartbeat (the mirror of their lease) is older than `heartbeat_before`."""

    def stuck(self, *, states: Sequence[State], updated_before: float, limit: int) -> list[AllocationRecord]: ...

    def due_restarts(self, *, before: float, limit: int) -> list[tuple[str, str, int]]:
        """(parent id, allocation id, incarnation) of decided restarts that should have happened by `before`."""


class Retention(Protocol):
    """History and ended allocations do not grow for ever: each call deletes a small batch, so writers never wait long."""

    def event_cutoff(self, *, keep: int) -> float | None:
        """The `at` of the oldest of the `keep` newest events (those strictly older are over the count); None when
        there are fewer."""

    def prune_events(self, *, before: float, limit: int) -> int:
        """Delete at most `limit` events with `at < before`; returns how many went."""

    def allocation_cutoff(self, *, keep: int) -> float | None:
        """The last change (`updated_at`) of the longest ended of the `keep` most recently ended allocations."""

    def prune_allocations(self, *, before: float, limit: int) -> list[str]:
        """Delete at most `limit` ended allocations, oldest first, last changed before `before`, that nothing
        depends on: terminal, no restart decided, no children (a live allocation's parent chain is never touched;
        a parent goes once its children have). Each goes with all its edges. Returns their ids."""


class Admin(Protocol):
    engine: str

    def bootstrap(self) -> None:
        """Create ids, unique constraints and indexes; safe to run any number of times."""

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise if the engine cannot answer a trivial query."""

    def clear(self) -> None:
        """Delete every vertex of the control plane (tests and benchmarks)."""

    def raw_query(self, *, text: str, timeout_s: float, limit: int) -> RawResult:
        """Run an operator's read-only query in the engine's own language, for graph browsers and scripts.

        Writes are refused by the engine itself (read-only execution), never by parsing the
        text; malformed text is InvalidInput naming `query`; past `timeout_s` it is stopped
        (QueryTimeout); at most `limit` rows come back (`truncated` says there were more).
        """


class GraphStore(Topology, PlacementReads, Hierarchy, Ledger, History, Repair, Retention, Admin, Protocol):
    """Every role: what an engine adapter implements, and what the assembly point holds."""
