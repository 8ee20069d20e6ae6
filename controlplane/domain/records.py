"""What the store returns: plain frozen records, independent of any engine's result types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain.lifecycle import TERMINAL, State


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    name: str
    status: str
    labels: tuple[str, ...]
    cpu: int
    memory: int
    cpu_free: int
    memory_free: int
    heartbeat_at: float
    registered_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> NodeRecord:
        known = set(cls.__slots__)
        return cls(
            id=p["id"],
            name=p.get("name", p["id"]),
            status=p.get("status", "ready"),
            labels=tuple(p.get("labels") or ()),
            cpu=int(p.get("cpu", 0)),
            memory=int(p.get("memory", 0)),
            cpu_free=int(p.get("cpu_free", 0)),
            memory_free=int(p.get("memory_free", 0)),
            heartbeat_at=float(p.get("heartbeat_at", 0.0)),
            registered_at=float(p.get("registered_at", 0.0)),
            extra={k: v for k, v in p.items() if k not in known and not k.startswith("_")},
        )


@dataclass(frozen=True, slots=True)
class GpuRecord:
    id: str
    model: str
    memory: int
    node_id: str
    claimed_by: str | None
    uuid: str | None = None
    index: int | None = None

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> GpuRecord:
        return cls(
            id=p["id"],
            model=p.get("model", ""),
            memory=int(p.get("memory", 0)),
            node_id=p.get("node_id", ""),
            claimed_by=p.get("claimed_by"),
            uuid=p.get("uuid"),
            index=int(p["index"]) if p.get("index") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class NeighborRecord:
    node_id: str
    rtt_ms: float
    bandwidth: float


@dataclass(frozen=True, slots=True)
class AllocationRecord:
    id: str
    name: str
    executor: str
    argv: tuple[str, ...]
    env: dict[str, str]
    state: State
    incarnation: int
    version: int
    parent_id: str
    node_id: str
    cpu: int
    memory: int
    gpus: int
    gpu_model: str | None
    gpu_ids: tuple[str, ...]
    grace_period_s: float
    created_at: float
    updated_at: float
    exit_code: int | None = None
    error: str | None = None
    output_tail: str | None = None
    pid: int | None = None
    #: placement constraints, honoured by the spawn and by every restart
    pin: str | None = None
    node_labels: tuple[str, ...] = ()
    max_rtt_ms: float | None = None
    spread_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> AllocationRecord:
        known = _ALLOCATION_FIELDS
        env = p.get("env")
        return cls(
            id=p["id"],
            name=p.get("name", ""),
            executor=p.get("executor", "process"),
            argv=tuple(p.get("argv") or ()),
            env=json.loads(env) if env and env != "{}" else {},
            state=_STATES[p["state"]],
            incarnation=int(p.get("incarnation", 1)),
            version=int(p.get("version", 0)),
            parent_id=p.get("parent_id", ""),
            node_id=p.get("node_id", ""),
            cpu=int(p.get("cpu", 0)),
            memory=int(p.get("memory", 0)),
            gpus=int(p.get("gpus", 0)),
            gpu_model=p.get("gpu_model") or None,
            gpu_ids=tuple(p.get("gpu_ids") or ()),
            grace_period_s=float(p.get("grace_period_s", 10.0)),
            created_at=float(p.get("created_at", 0.0)),
            updated_at=float(p.get("updated_at", 0.0)),
            exit_code=p.get("exit_code"),
            error=p.get("error"),
            output_tail=p.get("output_tail"),
            pid=p.get("pid"),
            pin=p.get("pin") or None,
            node_labels=tuple(p.get("node_labels") or ()),
            max_rtt_ms=float(p["max_rtt_ms"]) if p.get("max_rtt_ms") is not None else None,
            spread_key=p.get("spread_key") or None,
            extra={k: v for k, v in p.items() if k not in known and not k.startswith("_") and v is not None},
        )


_ALLOCATION_FIELDS = frozenset(AllocationRecord.__slots__)
_STATES = {s.value: s for s in State}


@dataclass(frozen=True, slots=True)
class Vertex:
    """Any vertex a generic traversal reaches: its label and its properties."""

    label: str
    id: str
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """The allocation after a transition, and the state it left (None when the precondition failed)."""

    allocation: AllocationRecord
    previous: State | None

    @property
    def applied(self) -> bool:
        return self.previous is not None


@dataclass(frozen=True, slots=True)
class Event:
    """A transition or a supervision decision, in the order it happened."""

    id: str
    kind: str  # transition | decision | terminated | escalated | ...
    allocation_id: str
    at: float
    incarnation: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = None
    by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: orders events with the same `at` (the writer's clock in ns)
    tick: int = 0

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> Event:
        core = {"id", "kind", "allocation_id", "at", "tick", "incarnation", "from", "to", "reason", "by"}
        return cls(
            id=p["id"],
            kind=p.get("kind", "transition"),
            allocation_id=p.get("allocation_id", ""),
            at=float(p.get("at", 0.0)),
            incarnation=p.get("incarnation"),
            from_state=p.get("from"),
            to_state=p.get("to"),
            reason=p.get("reason"),
            by=p.get("by"),
            data={k: v for k, v in p.items() if k not in core},
            tick=int(p.get("tick") or 0),
        )

    def to_props(self) -> dict[str, Any]:
        p: dict[str, Any] = {"id": self.id, "kind": self.kind, "allocation_id": self.allocation_id, "at": self.at}
        for k, v in (("incarnation", self.incarnation), ("from", self.from_state), ("to", self.to_state),
                     ("reason", self.reason), ("by", self.by)):
            if v is not None:
                p[k] = v
        p.update({k: v for k, v in self.data.items() if v is not None})
        return p


@dataclass(frozen=True, slots=True)
class Exit:
    """A process that ended, as its node agent reports it: its key (allocation id, incarnation), exit code and
    output tail; why it failed when the code does not say it (e.g. "oom_killed: memory limit ..."), and what was
    measured of it (usage_cpu_s, ...)."""

    key: tuple[str, int]
    exit_code: int
    output_tail: str
    failure: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawResult:
    """The answer of a read-only query in the engine's own language (Cypher or Gremlin)."""

    engine: str
    language: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class LogLocation:
    """Where one incarnation's output is: the node whose agent ran it, and the file that agent writes."""

    allocation_id: str
    incarnation: int
    node_id: str
    #: the file on that node (None: not known, e.g. an older incarnation on another node whose events were pruned)
    path: str | None
    #: its process was started, so its agent wrote a log (for an older incarnation: its start is on record)
    started: bool
    #: it may still be writing (the current incarnation, not ended)
    live: bool
    #: what the graph kept of its output: the current incarnation's last bytes, once it ended
    output_tail: str | None
