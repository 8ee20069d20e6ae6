"""Nodes join, heartbeat and are linked to their neighbours; operators cordon, drain, uncordon and deregister them.

Cordon: no new placements (what runs stays). Drain: cordoned, `draining`, and
its work moved off gracefully, each allocation by its restart type — permanent
and transient ones are restarted elsewhere by their parents' restart path
(stopped first, within the drain's deadline), temporary ones are stopped.
Uncordon: placements come back. Deregister: a node with no live work leaves the
graph; with live work it is refused with the count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import Conflict, InvalidInput, NotFound
from controlplane.domain.lifecycle import LIVE
from controlplane.domain.records import AllocationRecord, Event, NodeRecord
from controlplane.domain.specs import NodeSpec, parse
from controlplane.domain.supervision import RestartType, restart_type_of
from controlplane.domain.text import Id, checked
from controlplane.ports.dispatch import RestartKey
from controlplane.ports.store import Hierarchy, History, Ledger, Topology
from controlplane.services.supervisor import SupervisorService

MAX_DRAIN_DEADLINE_S = 3600.0


class NodeStore(Topology, Hierarchy, Ledger, History, Protocol):
    """What node lifecycle reads and writes."""


class NodeService:
    def __init__(self, store: NodeStore, supervisor: SupervisorService, *, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.supervisor = supervisor
        self.clock = clock

    def register(self, spec: NodeSpec | Mapping[str, Any]) -> NodeRecord:
        node = parse(NodeSpec, spec, field="node")
        record = self.store.register_node(spec=node, now=self.clock())
        if record is None:  # an operator's registration names no identity, so it is never refused
            raise Conflict(f"node {node.name} could not be registered", field="name")
        return record

    @checked(node_id=Id("node"))
    def heartbeat(self, node_id: str) -> None:
        if not self.store.heartbeat(node_id=node_id, now=self.clock()):
            raise NotFound(f"no node {node_id!r}", field="node")

    @checked(a=Id("a"), b=Id("b"))
    def connect(self, a: str, b: str, *, rtt_ms: float, bandwidth: float = 0.0) -> None:
        """Link two nodes both ways with their round-trip time (used for affinity) and bandwidth."""
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

    # --- lifecycle -------------------------------------------------------------------------
    @checked(node_id=Id("id"))
    def cordon(self, node_id: str, *, by: str = "user") -> NodeRecord:
        """No new placements on the node; what runs there stays."""
        return self._schedule(node_id, cordoned=True, drain=False, reason="cordoned: no new placements", by=by)

    @checked(node_id=Id("id"))
    def uncordon(self, node_id: str, *, by: str = "user") -> NodeRecord:
        return self._schedule(node_id, cordoned=False, drain=False, reason="uncordoned: placements allowed again", by=by)

    @checked(node_id=Id("id"))
    def drain(self, node_id: str, *, deadline_s: float = 30.0, by: str = "user") -> NodeRecord:
        """Cordon, then move every live process allocation off the node by its restart type, within `deadline_s`."""
        if not 0 <= deadline_s <= MAX_DRAIN_DEADLINE_S:
            raise InvalidInput(f"must be between 0 and {MAX_DRAIN_DEADLINE_S:g} seconds", field="deadlineS")
        node = self._schedule(node_id, cordoned=True, drain=True, reason=f"draining (deadline {deadline_s:g} s)", by=by)
        moving = self._placed_on(node_id)
        by_parent: dict[str, list[RestartKey]] = {}
        for a in moving:
            # the stop it gets on the way out waits at most the deadline before the kill
            self.store.set_fields(allocation_id=a.id, incarnation=a.incarnation,
                                  fields={"stop_grace_s": min(a.grace_period_s, deadline_s)})
            if restart_type_of(a.extra.get("restart_type")) is RestartType.TEMPORARY:
                self.supervisor.stop(a.id, include_root=True, reason=f"node {node_id} drained", by=by)
            else:
                by_parent.setdefault(a.parent_id, []).append((a.id, a.incarnation, int(a.extra.get("backoff_level") or 0)))
        for parent_id, items in by_parent.items():
            self.supervisor.restart(parent_id, items, f"node {node_id} drained")
        return node

    @checked(node_id=Id("id"))
    def deregister(self, node_id: str, *, by: str = "user") -> None:
        """The node leaves the graph, with its GPUs; refused while it runs or created live work."""
        busy = self.store.deregister_node(node_id=node_id)
        if busy is None:
            raise NotFound(f"no node {node_id!r}", field="id")
        if busy:
            raise Conflict(f"node {node_id} still has {busy} live allocation(s) placed on it or created by it; "
                           "drain it or stop them first", field="id")
        self.store.record_events(events=[self._event(node_id, "deregistered: left the graph", by)])

    @checked(node_id=Id("id"), identity=Id("identity"))
    def credential_revoked(self, node_id: str, *, identity: str, by: str = "user") -> None:
        """Record on the node that the credential its agent registered it with was revoked (the API refuses it)."""
        self.store.record_events(events=[self._event(
            node_id, f"credential {identity[:8]} revoked: its agent is refused from its next request on", by)])

    def _schedule(self, node_id: str, *, cordoned: bool, drain: bool, reason: str, by: str) -> NodeRecord:
        node = self.store.set_node_scheduling(node_id=node_id, cordoned=cordoned, drain=drain)
        if node is None:
            raise NotFound(f"no node {node_id!r}", field="id")
        self.store.record_events(events=[self._event(node_id, reason, by, version=int(node.extra.get("version") or 0))])
        return node

    def _event(self, node_id: str, reason: str, by: str, *, version: int = 0) -> Event:
        now = self.clock()
        return Event(id=f"{node_id}:node:{version or int(now * 1000)}", kind="node", allocation_id=node_id, at=now,
                     reason=reason, by=by)

    def _placed_on(self, node_id: str) -> list[AllocationRecord]:
        out: list[AllocationRecord] = []
        after = None
        while True:
            page = self.store.list_allocations(after=after, limit=1000, node_id=node_id)
            out += [a for a in page if a.state in LIVE and a.executor == "process"]
            if len(page) < 1000:
                return out
            after = page[-1].id
