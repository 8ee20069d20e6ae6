"""The one store interface every graph engine implements.

Every state change is one atomic request with its precondition inside it and
is idempotent when repeated. Methods are keyword-only so call sites read as
sentences. The conformance suite in tests/ runs every behaviour on every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.domain.lifecycle import State
from controlplane.domain.records import (
    AllocationRecord,
    GpuRecord,
    NeighborRecord,
    NodeRecord,
    TransitionResult,
    Vertex,
)
from controlplane.domain.resources import NodeCapacity
from controlplane.domain.specs import NodeSpec
from controlplane.domain.traversal import TraversalSpec


@dataclass(frozen=True, slots=True)
class NewAllocation:
    """An allocation about to be created, already placed on a node by the service."""

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
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One guarded transition: the current state picks a move from `moves`, or the change is refused."""

    allocation_id: str
    moves: Mapping[State, State]
    incarnation: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: the error recorded when the move ends in `failed`
    failure: str | None = None


class CreateRefused(Exception):
    """The atomic create's precondition did not hold; `reason` says which one."""

    PARENT_MISSING = "parent_missing"
    PARENT_NOT_LIVE = "parent_not_live"
    NO_CAPACITY = "no_capacity"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class GraphStore(Protocol):
    engine: str

    def bootstrap(self) -> None:
        """Create ids, unique constraints and indexes; safe to run any number of times."""

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise if the engine cannot answer a trivial query."""

    def clear(self) -> None:
        """Delete every vertex of the control plane (tests and benchmarks)."""

    # nodes
    def register_node(self, *, spec: NodeSpec, now: float) -> NodeRecord: ...

    def heartbeat(self, *, node_id: str, now: float) -> bool: ...

    def set_node_status(self, *, node_id: str, expected: Sequence[str], status: str, now: float) -> NodeRecord | None: ...

    def connect_neighbors(self, *, a: str, b: str, rtt_ms: float, bandwidth: float) -> bool: ...

    def get_node(self, *, node_id: str) -> NodeRecord | None: ...

    def list_nodes(self, *, after: str | None, limit: int, status: str | None = None) -> list[NodeRecord]: ...

    def neighbors(self, *, node_id: str) -> list[NeighborRecord]: ...

    def gpus(self, *, node_id: str) -> list[GpuRecord]: ...

    def node_capacities(self, *, node_ids: Sequence[str] | None = None) -> list[NodeCapacity]: ...

    # allocations
    def create_allocations(self, *, parent_id: str, allocations: Sequence[NewAllocation], now: float) -> list[AllocationRecord]:
        """Reserve capacity and GPUs on each node and create every allocation under parent, all or nothing.

        Raises CreateRefused when a precondition fails (nothing is written). Repeating a
        call that already committed returns the allocations it created.
        """

    def transition(
        self,
        *,
        allocation_id: str,
        expected: Sequence[State],
        to: State,
        now: float,
        incarnation: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> TransitionResult | None:
        """Move to `to` if the state is one of `expected` (and the incarnation matches).

        Leaving the states that hold resources releases them in the same request.
        None when the allocation does not exist; `applied` is False when the
        precondition failed (the record shows the current state).
        """

    def transition_many(self, *, changes: Sequence[Change], now: float) -> list[TransitionResult | None]:
        """Apply many guarded transitions in one request; one result per change, in order."""

    def get_allocation(self, *, allocation_id: str) -> AllocationRecord | None: ...

    def get_allocations(self, *, allocation_ids: Sequence[str]) -> list[AllocationRecord]: ...

    def list_allocations(
        self, *, after: str | None, limit: int, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]: ...

    def children(self, *, parent_id: str, after: str | None, limit: int) -> list[AllocationRecord]: ...

    def descendants(self, *, root_id: str, max_depth: int, limit: int) -> list[AllocationRecord]: ...

    def ancestors(self, *, allocation_id: str) -> list[Vertex]:
        """Parent first, up to and including the root Node."""

    def actor_label(self, *, actor_id: str) -> str | None:
        """'Node', 'Allocation', 'Gpu' or None: what kind of vertex has this id."""

    def traverse(self, *, spec: TraversalSpec) -> list[Vertex]: ...
