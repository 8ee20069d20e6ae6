"""The GraphStore implementation shared by every Cypher engine.

An engine adapter supplies three things: how to run a read, how to run a
write (one atomic request), and its schema bootstrap. Everything else,
including every statement's text, lives here so the engines cannot drift.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from controlplane.domain.lifecycle import ACCEPTS_CHILDREN, HOLDS_RESOURCES, LIVE, NODE_LOST, RESTARTABLE, TERMINAL, State
from controlplane.domain.placement import NodeInventory
from controlplane.domain.records import (
    AllocationRecord,
    Event,
    GpuRecord,
    NeighborRecord,
    NodeRecord,
    TransitionResult,
    Vertex,
)
from controlplane.domain.resources import FreeGpu, NodeCapacity
from controlplane.domain.specs import NodeSpec
from controlplane.domain.traversal import TraversalSpec
from controlplane.domain.vocabulary import ALLOCATION_CORE, ALLOCATION_PROPERTIES
from controlplane.ports.store import Change, CreateRefused, NewAllocation, RestartItem, ToStop, node_demands
from graph_schema.cypher import statements as q
from graph_schema.cypher.traversal import compile_traversal

Row = list[Any]
_HOLDING = sorted(s.value for s in HOLDS_RESOURCES)
_ACCEPTS = sorted(s.value for s in ACCEPTS_CHILDREN)
_LIVE = sorted(s.value for s in LIVE)
_RESTARTABLE = sorted(s.value for s in RESTARTABLE)
_TERMINAL = sorted(s.value for s in TERMINAL)
_NODE_LOST_FROM = sorted(s.value for s in NODE_LOST.steps)


def _tick() -> int:
    """Orders events written at the same `at` (a test clock, one batch): the writer's wall clock in ns."""
    return time.time_ns()


def _capacity(r: Row) -> NodeCapacity:
    return NodeCapacity(
        node_id=r[0],
        status=r[1],
        labels=tuple(r[2] or ()),
        cpu_free=int(r[3]),
        memory_free=int(r[4]),
        free_gpus=tuple(sorted((FreeGpu(i, m) for i, m in zip(r[5], r[6], strict=True)), key=lambda g: g.id)),
    )


def props_of(value: Any) -> dict[str, Any]:
    """A vertex's properties as the driver returned them, as a plain dict."""
    return dict(value) if value is not None else {}


_LOCK_MARKER = re.compile(r"REMOVE (\w+)\._lock")


class CypherStore(ABC):
    engine: str = "cypher"
    _dialect_cache: dict[str, str]

    def __init__(self) -> None:
        self._dialect_cache = {}

    # --- what an engine adapter provides -------------------------------------------------
    #: how the `REMOVE x._lock` marker of statements.py is written for this engine
    lock_clause: str = r"SET \1._lock = true"

    def _dialect(self, query: str) -> str:
        cached = self._dialect_cache.get(query)
        if cached is None:
            cached = _LOCK_MARKER.sub(self.lock_clause, query)
            self._dialect_cache[query] = cached
        return cached

    @abstractmethod
    def _read(self, query: str, params: dict[str, Any]) -> list[Row]: ...

    @abstractmethod
    def _write(self, query: str, params: dict[str, Any]) -> list[Row]: ...

    @abstractmethod
    def bootstrap(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def clear(self) -> None: ...

    def ping(self) -> None:
        self._read("RETURN 1", {})

    def read(self, query: str, params: dict[str, Any]) -> list[Row]:
        """A read-only statement (for the parts of the product with statements of their own, such as jobs)."""
        return self._read(query, params)

    def write(self, query: str, params: dict[str, Any]) -> list[Row]:
        """One atomic write statement."""
        return self._write(query, params)

    # --- nodes -------------------------------------------------------------------------
    def register_node(self, *, spec: NodeSpec, now: float, identity: str | None = None) -> NodeRecord | None:
        gpus = [{"id": f"{spec.name}/gpu{i}", "model": g.model, "memory": g.memory_mib, "uuid": g.uuid, "index": g.index}
                for i, g in enumerate(spec.gpus)]
        rows = self._write(
            q.REGISTER_NODE,
            {
                "id": spec.name,
                "name": spec.name,
                "labels": list(spec.label_list()),
                "cpu": spec.cpu_milli,
                "memory": spec.memory_mib,
                "gpus": gpus,
                "holding": _HOLDING,
                "supervision": spec.supervision.model_dump_json() if spec.supervision else None,
                "isolation": spec.isolation,
                "identity": identity,
                "now": now,
            },
        )
        return NodeRecord.from_props(props_of(rows[0][0])) if rows else None

    def heartbeat(self, *, node_id: str, now: float) -> str | None:
        rows = self._write(q.HEARTBEAT, {"id": node_id, "now": now})
        return rows[0][0] if rows else None

    def set_node_scheduling(self, *, node_id: str, cordoned: bool, drain: bool) -> NodeRecord | None:
        rows = self._write(q.SET_NODE_SCHEDULING, {"id": node_id, "cordoned": cordoned, "drain": drain})
        return NodeRecord.from_props(props_of(rows[0][0])) if rows else None

    def deregister_node(self, *, node_id: str) -> int | None:
        if self._write(q.DEREGISTER_NODE, {"id": node_id, "live": _LIVE}):
            return 0
        if self.get_node(node_id=node_id) is None:
            return None
        return int(self._read(q.NODE_WORK, {"id": node_id, "live": _LIVE})[0][0])

    def connect_neighbors(self, *, a: str, b: str, rtt_ms: float, bandwidth: float) -> bool:
        return bool(self._write(q.CONNECT_NEIGHBORS, {"a": a, "b": b, "rtt_ms": float(rtt_ms), "bandwidth": float(bandwidth)}))

    def get_node(self, *, node_id: str) -> NodeRecord | None:
        rows = self._read(q.GET_NODE, {"id": node_id})
        return NodeRecord.from_props(props_of(rows[0][0])) if rows else None

    def list_nodes(self, *, after: str | None, limit: int, status: str | None = None) -> list[NodeRecord]:
        rows = self._read(q.LIST_NODES, {"after": after, "limit": int(limit), "status": status})
        return [NodeRecord.from_props(props_of(r[0])) for r in rows]

    def neighbors(self, *, node_id: str) -> list[NeighborRecord]:
        rows = self._read(q.NEIGHBORS, {"id": node_id})
        return [NeighborRecord(node_id=r[0], rtt_ms=float(r[1]), bandwidth=float(r[2])) for r in rows]

    def gpus(self, *, node_id: str) -> list[GpuRecord]:
        return [GpuRecord.from_props(props_of(r[0])) for r in self._read(q.GPUS, {"id": node_id})]

    def candidates(
        self, *, cpu: int, memory: int, gpus: int, gpu_model: str | None, labels: Sequence[str],
        node_ids: Sequence[str] | None, limit: int,
    ) -> list[NodeCapacity]:
        params = {"cpu": cpu, "memory": memory, "gpus": gpus, "model": gpu_model, "labels": list(labels),
                  "ids": list(node_ids) if node_ids is not None else None, "limit": int(limit)}
        return [_capacity(r) for r in self._read(q.CANDIDATES_GPU if gpus else q.CANDIDATES, params)]

    def spread_counts(self, *, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        rows = self._read(q.SPREAD_COUNTS, {"keys": list(keys), "live": _LIVE})
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def node_inventory(self, *, labels: Sequence[str], node_ids: Sequence[str] | None, limit: int) -> list[NodeInventory]:
        rows = self._read(q.NODE_INVENTORY, {"labels": list(labels), "ids": list(node_ids) if node_ids is not None else None,
                                             "limit": int(limit)})
        out = []
        for r in rows:
            gpus = sorted((str(m), bool(free)) for m, free in r[7] if m is not None)
            out.append(NodeInventory(
                node_id=r[0], status=r[1], labels=tuple(r[2] or ()), cpu=int(r[3]), memory=int(r[4]),
                cpu_free=int(r[5]), memory_free=int(r[6]), gpu_models=tuple(m for m, _ in gpus),
                free_gpu_models=tuple(m for m, free in gpus if free), cordoned=bool(r[8]),
            ))
        return out

    # --- allocations -------------------------------------------------------------------
    def create_allocations(
        self, *, parent_id: str, allocations: Sequence[NewAllocation], now: float
    ) -> list[AllocationRecord]:
        if not allocations:
            return []
        demands = node_demands(allocations)
        props = [self._allocationprops(a, parent_id=parent_id, now=now) for a in allocations]
        params = {
            "first_id": allocations[0].id,
            "parent_id": parent_id,
            "accepts": _ACCEPTS,
            "demands": demands,  # lock order: nodes by id
            "allocs": props,
            "now": now,
            "tick": _tick(),
        }
        rows = self._write(q.CREATE_ALLOCATIONS, params)
        if rows:
            return [AllocationRecord.from_props(props_of(r[0])) for r in rows]
        # Nothing written: either it was already committed (a repeat), or a precondition failed.
        existing = self.get_allocations(allocation_ids=[a.id for a in allocations])
        if len(existing) == len(allocations):
            return sorted(existing, key=lambda r: r.extra.get("seq", 0))
        if existing:
            raise CreateRefused(CreateRefused.DUPLICATE, ", ".join(sorted(a.id for a in existing)))
        found, state, is_node = self._read(q.DIAGNOSE_PARENT, {"parent_id": parent_id})[0]
        if not found:
            raise CreateRefused(CreateRefused.PARENT_MISSING, parent_id)
        if not is_node and state not in _ACCEPTS:
            raise CreateRefused(CreateRefused.PARENT_NOT_LIVE, f"{parent_id} is {state}")
        raise CreateRefused(CreateRefused.NO_CAPACITY, ", ".join(d["node_id"] for d in demands))

    @staticmethod
    def _allocationprops(a: NewAllocation, *, parent_id: str, now: float) -> dict[str, Any]:
        p = asdict(a)
        p.pop("env_json")
        extra = p.pop("extra") or {}
        p.update(
            env=a.env_json,
            argv=list(a.argv),
            gpu_ids=list(a.gpu_ids),
            node_labels=list(a.node_labels),
            gpu_model=a.gpu_model or "",
            parent_id=parent_id,
            state=State.PLACED.value,
            incarnation=1,
            version=1,
            created_at=now,
            updated_at=now,
        )
        p.update(extra)
        return {k: v for k, v in p.items() if v is not None}

    def transition_many(self, *, changes: Sequence[Change], now: float) -> list[TransitionResult | None]:
        if not changes:
            return []
        params = [
            {
                "id": c.allocation_id,
                "moves": {k.value: v.value for k, v in c.move.steps.items()},
                "incarnation": c.incarnation,
                "fields": {k: v for k, v in c.fields.items() if v is not None},
                "failure": c.failure,
                "reason": c.reason,
                "by": c.by,
                "leaf_only": c.leaf_only,
                "on_node": c.on_node,
            }
            for c in changes
        ]
        may_release = any(to not in HOLDS_RESOURCES for c in changes for to in c.move.targets)
        rows = self._write(
            q.TRANSITION if may_release else q.TRANSITION_KEEP,
            {"changes": params, "now": now, "tick": _tick(), "holding": _HOLDING, "live": _LIVE},
        )
        applied = {r[0]["id"]: TransitionResult(AllocationRecord.from_props(props_of(r[0])), State(r[1])) for r in rows}
        missing = [c.allocation_id for c in changes if c.allocation_id not in applied]
        current = {a.id: a for a in self.get_allocations(allocation_ids=missing)} if missing else {}
        results: list[TransitionResult | None] = []
        for c in changes:
            if c.allocation_id in applied:
                results.append(applied[c.allocation_id])
            elif c.allocation_id in current:
                results.append(TransitionResult(current[c.allocation_id], None))
            else:
                results.append(None)
        return results

    def get_allocation(self, *, allocation_id: str) -> AllocationRecord | None:
        rows = self._read(q.GET_ALLOCATION, {"id": allocation_id})
        return AllocationRecord.from_props(props_of(rows[0][0])) if rows else None

    def get_allocations(self, *, allocation_ids: Sequence[str]) -> list[AllocationRecord]:
        rows = self._read(q.GET_ALLOCATIONS, {"ids": list(allocation_ids)})
        return [AllocationRecord.from_props(props_of(r[0])) for r in rows]

    def list_allocations(
        self, *, after: str | None, limit: int, state: str | None = None, node_id: str | None = None
    ) -> list[AllocationRecord]:
        rows = self._read(q.LIST_ALLOCATIONS, {"after": after, "limit": int(limit), "state": state, "node_id": node_id})
        return [AllocationRecord.from_props(props_of(r[0])) for r in rows]

    def children(self, *, parent_id: str, after: str | None, limit: int) -> list[AllocationRecord]:
        rows = self._read(q.CHILDREN, {"id": parent_id, "after": after, "limit": int(limit)})
        return [AllocationRecord.from_props(props_of(r[0])) for r in rows]

    def descendants(
        self, *, root_id: str, max_depth: int, limit: int, fields: Collection[str] | None = None
    ) -> list[AllocationRecord]:
        projection = None
        if fields is not None:
            projection = tuple(dict.fromkeys([*ALLOCATION_CORE, *sorted(set(fields) & ALLOCATION_PROPERTIES)]))
        rows = self._read(q.descendants(max_depth, projection), {"id": root_id, "limit": int(limit)})
        return [AllocationRecord.from_props(props_of(p)) for p in (rows[0][0] if rows else [])]

    def ancestors(self, *, allocation_id: str) -> list[Vertex]:
        rows = self._read(q.ANCESTORS, {"id": allocation_id})
        return [self._vertex(r[0], r[1]) for r in rows]

    def actor_label(self, *, actor_id: str) -> str | None:
        rows = self._read(q.ACTOR_LABEL, {"id": actor_id})
        labels = rows[0][0] if rows else None
        return self._primary_label(labels) if labels else None

    def traverse(self, *, spec: TraversalSpec) -> list[Vertex]:
        query, params = compile_traversal(spec)
        return [self._vertex(r[0], r[1]) for r in self._read(query, params)]

    # --- supervision -------------------------------------------------------------------
    def restart_allocations(
        self, *, parent_id: str, items: Sequence[RestartItem], restart_log: Sequence[float], reason: str, now: float
    ) -> list[AllocationRecord]:
        if not items:
            return []
        demands = node_demands(items)
        rows = self._write(
            q.RESTART_ALLOCATIONS,
            {
                "parent_id": parent_id,
                "accepts": _ACCEPTS,
                "restartable": _RESTARTABLE,
                "demands": demands,
                "items": [
                    {"id": it.allocation_id, "from_incarnation": it.from_incarnation, "node_id": it.node_id,
                     "gpu_ids": list(it.gpu_ids), "backoff_level": it.backoff_level}
                    for it in items
                ],
                "restart_log": [float(t) for t in restart_log],
                "reason": reason,
                "now": now,
                "tick": _tick(),
            },
        )
        if rows:
            return [AllocationRecord.from_props(props_of(r[0])) for r in rows]
        found, state, is_node = self._read(q.DIAGNOSE_PARENT, {"parent_id": parent_id})[0]
        if not found:
            raise CreateRefused(CreateRefused.PARENT_MISSING, parent_id)
        if not is_node and state not in _ACCEPTS:
            raise CreateRefused(CreateRefused.PARENT_NOT_LIVE, f"{parent_id} is {state}")
        current = {a.id: a for a in self.get_allocations(allocation_ids=[it.allocation_id for it in items])}
        for it in items:
            a = current.get(it.allocation_id)
            if a is None or a.incarnation != it.from_incarnation or a.state not in RESTARTABLE:
                raise CreateRefused(CreateRefused.STALE, it.allocation_id)
        raise CreateRefused(CreateRefused.NO_CAPACITY, ", ".join(d["node_id"] for d in demands))

    def subtree_to_stop(self, *, root_id: str, include_root: bool) -> list[ToStop]:
        rows = self._read(q.SUBTREE_TO_STOP, {"id": root_id, "include_root": include_root, "live": _LIVE})
        return [ToStop(r[0], State(r[1]), int(r[2]), int(r[3])) for r in rows]

    def mark_orphans(self, *, parent_id: str, now: float) -> list[str]:
        return [r[0] for r in self._write(q.MARK_ORPHANS, {"id": parent_id, "now": now, "live": _LIVE})]

    def live_children(self, *, parent_ids: Sequence[str]) -> dict[str, int]:
        rows = self._read(q.LIVE_CHILDREN, {"ids": list(parent_ids), "live": _LIVE})
        return {r[0]: int(r[1]) for r in rows}

    def set_fields(self, *, allocation_id: str, incarnation: int | None, fields: dict[str, Any]) -> AllocationRecord | None:
        kept, removed = _split_removals(fields)
        rows = self._write(q.set_fields(removed),
                           {"id": allocation_id, "incarnation": incarnation, "fields": kept})
        return AllocationRecord.from_props(props_of(rows[0][0])) if rows else None

    def set_actor_fields(self, *, actor_id: str, fields: dict[str, Any]) -> None:
        kept, removed = _split_removals(fields)
        self._write(q.set_actor_fields(removed),
                    {"id": actor_id, "fields": kept})

    def watched_nodes(self) -> list[str]:
        return [r[0] for r in self._read(q.WATCHED_NODES, {})]

    def stale_nodes(self, *, heartbeat_before: float) -> list[str]:
        return [r[0] for r in self._read(q.STALE_NODES, {"before": heartbeat_before})]

    def mark_node_lost(self, *, node_id: str, heartbeat_before: float, now: float) -> list[AllocationRecord] | None:
        rows = self._write(q.MARK_NODE_LOST, {"id": node_id, "before": heartbeat_before, "now": now, "tick": _tick(),
                                              "from": _NODE_LOST_FROM})
        if not rows:
            return None
        return [AllocationRecord.from_props(props_of(p)) for p in rows[0][1] or [] if p]

    def watch(self, *, watcher_id: str, target_id: str, now: float) -> str | None:
        rows = self._write(q.WATCH, {"watcher": watcher_id, "target": target_id, "now": now})
        return rows[0][0] if rows else None

    def unwatch(self, *, watcher_id: str, target_id: str) -> bool:
        rows = self._write(q.UNWATCH, {"watcher": watcher_id, "target": target_id})
        return bool(rows and rows[0][0])

    def watchers(self, *, target_ids: Sequence[str]) -> dict[str, list[str]]:
        return {r[0]: list(r[1]) for r in self._read(q.WATCHERS, {"ids": list(target_ids)})}

    def record_events(self, *, events: Sequence[Event]) -> None:
        if events:
            tick = _tick()
            self._write(q.RECORD_EVENTS, {"events": [{**e.to_props(), "tick": tick + i} for i, e in enumerate(events)]})

    def record_decision(
        self, *, parent_id: str, event: Event, restart_log: Sequence[float] | None, restart_at: Mapping[str, float]
    ) -> tuple[Event, bool]:
        rows = self._write(q.RECORD_DECISION, {
            "parent_id": parent_id, "event": {**event.to_props(), "tick": _tick()}, "event_id": event.id,
            "restart_log": [float(t) for t in restart_log] if restart_log is not None else None,
            "restart_at": [{"id": k, "at": float(v)} for k, v in restart_at.items()],
        })
        if not rows:  # the parent is gone: nothing was recorded
            return event, False
        return Event.from_props(props_of(rows[0][0])), bool(rows[0][1])

    def events(self, *, allocation_id: str | None, since: float | None, limit: int) -> list[Event]:
        rows = self._read(q.EVENTS, {"allocation_id": allocation_id, "since": since, "limit": int(limit)})
        return [Event.from_props(props_of(r[0])) for r in rows]

    def stuck(self, *, states: Sequence[State], updated_before: float, limit: int) -> list[AllocationRecord]:
        rows = self._read(q.STUCK, {"states": [s.value for s in states], "before": updated_before, "limit": int(limit)})
        return [AllocationRecord.from_props(props_of(r[0])) for r in rows]

    def due_restarts(self, *, before: float, limit: int) -> list[tuple[str, str, int]]:
        rows = self._read(q.DUE_RESTARTS, {"before": before, "limit": int(limit), "restartable": _RESTARTABLE})
        return [(r[0], r[1], int(r[2])) for r in rows]

    # --- retention -----------------------------------------------------------------------
    def event_cutoff(self, *, keep: int) -> float | None:
        excess = int(self._read(q.EVENT_COUNT, {})[0][0]) - max(1, int(keep))
        if excess <= 0:
            return None
        rows = self._read(q.EVENT_CUTOFF, {"skip": excess})
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def prune_events(self, *, before: float, limit: int) -> int:
        rows = self._write(q.PRUNE_EVENTS, {"before": float(before), "limit": int(limit)})
        return int(rows[0][0]) if rows else 0

    def allocation_cutoff(self, *, keep: int) -> float | None:
        excess = int(self._read(q.ENDED_COUNT, {"terminal": _TERMINAL})[0][0]) - max(1, int(keep))
        if excess <= 0:
            return None
        rows = self._read(q.ALLOCATION_CUTOFF, {"skip": excess, "terminal": _TERMINAL})
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def prune_allocations(self, *, before: float, limit: int) -> list[str]:
        rows = self._write(q.PRUNE_ALLOCATIONS, {"before": float(before), "limit": int(limit), "terminal": _TERMINAL})
        return [r[0] for r in rows]

    @staticmethod
    def _primary_label(labels: Sequence[str]) -> str:
        return next((l for l in labels if l != "Actor"), labels[0])

    def _vertex(self, labels: Sequence[str], props: Any) -> Vertex:
        p = props_of(props)
        p = {k: v for k, v in p.items() if not k.startswith("_")}
        if "env" in p and isinstance(p["env"], str):
            try:
                p["env"] = json.loads(p["env"])
            except ValueError:
                pass
        return Vertex(label=self._primary_label(labels), id=str(p.get("id", "")), properties=p)


def _split_removals(fields: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fields to set, and the names of those to remove (None): removed one clause each (statements.removals)."""
    return {k: v for k, v in fields.items() if v is not None}, sorted(k for k, v in fields.items() if v is None)
