"""Placement: choose a node for each demand from a snapshot of candidate nodes.

Pure. The snapshot comes from a graph traversal (ready nodes with room, GPUs
of the wanted model through GPU_OWNER, neighbours within an RTT through
NEIGHBOR_OF) and may be stale by the time the reservation is committed: the
store re-checks every precondition inside the same atomic statement as the
creation, and the service retries with a fresh snapshot when it lost a race.

Score, best first: the preferred node (a restart stays where it was), fewest
allocations of the same spread key, lowest RTT to the parent's node, most free
cpu, then memory, then id (stable).

When nothing fits, `explain()` says why from what the nodes *are* (whatever their
status): a constraint no node could ever meet even empty is `Unsatisfiable`
(INVALID_INPUT, naming the field: "no node has zone=mars"); one that some node
could meet but none can now is NoCapacity ("no ready node with zone=eu and room
for cpu=500m memory=64MiB now: eu-1 is lost"). `waiting_for()` is the same demand
as the thing a waiting restart waits for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.domain.errors import ControlPlaneError, NoCapacity, Unsatisfiable
from controlplane.domain.resources import NodeCapacity, Resources
from controlplane.domain.specs import ISOLATION_ENFORCED, ISOLATION_LABEL

#: at most this many nodes are named in a "not now" explanation
EXPLAINED_NODES = 3
#: the label `require_isolation` places by
ISOLATED = f"{ISOLATION_LABEL}={ISOLATION_ENFORCED}"


@dataclass(frozen=True, slots=True)
class Demand:
    resources: Resources
    node_id: str | None = None  # pinned to this node when given
    labels: tuple[str, ...] = ()  # every "key=value" label must be on the node
    prefer_node_id: str | None = None  # tried first when it fits (a restart stays where it was)
    max_rtt_ms: float | None = None  # affinity: only nodes within this RTT of the parent's node
    spread_key: str | None = None  # spread: prefer nodes holding the fewest allocations with this key


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    gpu_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """What a node is, whatever its status now (totals, every GPU it owns), and what it has free."""

    node_id: str
    status: str
    labels: tuple[str, ...]
    cpu: int
    memory: int
    cpu_free: int
    memory_free: int
    gpu_models: tuple[str, ...] = ()  # one entry per GPU it owns, claimed or not
    free_gpu_models: tuple[str, ...] = ()  # one entry per GPU not claimed now
    cordoned: bool = False  # takes no new placements (see node lifecycle)


class NoRoom(NoCapacity):
    """No node has room now for `demands[index]` (the earlier ones had theirs); `detail` says what stands in the way."""

    def __init__(self, message: str, *, field: str, index: int = 0, detail: str = "") -> None:
        super().__init__(message, field=field)
        self.index = index
        self.detail = detail


def place(
    demands: Sequence[Demand],
    nodes: Sequence[NodeCapacity],
    *,
    rtt_ms: Mapping[str, float] | None = None,
    spread: Mapping[tuple[str, str], int] | None = None,
    field: str = "spec",
) -> list[Placement]:
    """Best node for each demand in turn, all or nothing. `rtt_ms`: RTT from the parent's node (itself: 0);
    `spread`: (spread key, node id) -> allocations already there."""
    free = {n.node_id: n for n in nodes}
    rtt = dict(rtt_ms or {})
    counts = dict(spread or {})
    placements: list[Placement] = []
    for i, d in enumerate(demands):
        where = f"{field}[{i}]" if len(demands) > 1 else field
        pool = [free[d.node_id]] if d.node_id is not None and d.node_id in free else ([] if d.node_id else free.values())
        best: NodeCapacity | None = None
        best_key: tuple[object, ...] | None = None
        for n in pool:
            if not n.fits(d.resources) or not all(label in n.labels for label in d.labels):
                continue
            if d.max_rtt_ms is not None and rtt.get(n.node_id, float("inf")) > d.max_rtt_ms:
                continue
            key = (
                n.node_id != d.prefer_node_id,
                counts.get((d.spread_key, n.node_id), 0) if d.spread_key else 0,
                rtt.get(n.node_id, 0.0) if d.max_rtt_ms is not None else 0.0,
                -n.cpu_free,
                -n.memory_free,
                n.node_id,
            )
            if best_key is None or key < best_key:
                best, best_key = n, key
        if best is None:
            raise NoRoom(_no_room(d), field=where, index=i)
        after, gpu_ids = best.take(d.resources)
        free[best.node_id] = after
        if d.spread_key:
            counts[(d.spread_key, best.node_id)] = counts.get((d.spread_key, best.node_id), 0) + 1
        placements.append(Placement(node_id=best.node_id, gpu_ids=gpu_ids))
    return placements


def _no_room(d: Demand) -> str:
    r = d.resources
    target = f"node {d.node_id}" if d.node_id else "any ready node"
    gpu = f", {r.gpus} GPU(s){' ' + r.gpu_model if r.gpu_model else ''}" if r.gpus else ""
    labels = f" with {', '.join(d.labels)}" if d.labels else ""
    near = f" within {d.max_rtt_ms:g} ms of the parent's node" if d.max_rtt_ms is not None else ""
    return f"{target}{labels}{near} has no room for cpu={r.cpu_milli}m memory={r.memory_mib}MiB{gpu}"


def _gpus(r: Resources) -> str:
    return f"{r.gpus} {r.gpu_model}" if r.gpu_model else f"{r.gpus} GPU{'s' if r.gpus != 1 else ''}"


def _room(r: Resources) -> str:
    return f"room for cpu={r.cpu_milli}m memory={r.memory_mib}MiB" if r.cpu_milli or r.memory_mib else ""


def _and(parts: Sequence[str]) -> str:
    kept = [p for p in parts if p]
    return ", ".join(kept[:-1]) + " and " + kept[-1] if len(kept) > 1 else "".join(kept)


def waiting_for(d: Demand) -> str:
    """What the demand waits for, as an operator reads it: "a ready node with zone=eu, 1 A100 and room for ..."."""
    r = d.resources
    wants = _and([", ".join(d.labels), _gpus(r) if r.gpus else "", _room(r)])
    with_wants = f" with {wants}" if wants else ""
    if d.node_id:
        return f"node {d.node_id} to be ready{with_wants}"
    near = f" within {d.max_rtt_ms:g} ms of the parent's node" if d.max_rtt_ms is not None else ""
    return f"a ready node{near}{with_wants}"



def explain(
    d: Demand, inventory: Sequence[NodeInventory], *, rtt_ms: Mapping[str, float] | None = None, field: str = "spec",
    placed_before: int = 0,
) -> ControlPlaneError:
    """Why no node takes `d`: Unsatisfiable naming the field when no node of `inventory` could, whatever its
    status and even empty; else NoCapacity saying what stands in the way now on the likeliest nodes.

    `inventory`: at least every node carrying d's labels (and d's node, when pinned); `rtt_ms`: RTT from the
    parent's node (itself 0); `placed_before`: demands of the same batch placed before this one (the room
    may have gone to them).
    """
    r = d.resources
    pin = d.node_id
    some = "no node" + (f" with {', '.join(d.labels)}" if d.labels else "")

    def never(unpinned: str, pinned: str, where: str) -> Unsatisfiable:
        return Unsatisfiable(f"node {pin} {pinned}" if pin else f"{some} {unpinned}", field=f"{field}.{where}")

    pool = [n for n in inventory if all(label in n.labels for label in d.labels)]
    asked = [label for label in d.labels if label != ISOLATED]  # the labels asked for by name
    if pin is not None:
        node = next((n for n in inventory if n.node_id == pin), None)
        if node is None:
            return Unsatisfiable(f"no node {pin} is registered", field=f"{field}.node")
        missing = [label for label in asked if label not in node.labels]
        if missing:
            return Unsatisfiable(f"node {pin} does not have {' and '.join(missing)}", field=f"{field}.node_labels")
        if ISOLATED in d.labels and ISOLATED not in node.labels:
            return Unsatisfiable(f"node {pin} does not enforce isolation (label {ISOLATED})", field=f"{field}.require_isolation")
        pool = [node]
    if not pool:
        if asked and not any(all(label in n.labels for label in asked) for n in inventory):
            return Unsatisfiable(f"no node has {' and '.join(asked)}", field=f"{field}.node_labels")
        with_asked = f" with {', '.join(asked)}" if asked else ""
        return Unsatisfiable(f"no node{with_asked} enforces isolation (label {ISOLATED})", field=f"{field}.require_isolation")
    if d.max_rtt_ms is not None:
        rtt = rtt_ms or {}
        pool = [n for n in pool if rtt.get(n.node_id, float("inf")) <= d.max_rtt_ms]
        if not pool:
            near = f"within {d.max_rtt_ms:g} ms of the parent's node"
            return never(f"is {near}", f"is not {near}", "max_rtt_ms")
    if r.gpus:
        def owned(n: NodeInventory) -> int:
            return sum(1 for m in n.gpu_models if r.gpu_model is None or m == r.gpu_model)

        most = max(owned(n) for n in pool)
        if most == 0:
            what = f"GPU of model {r.gpu_model}" if r.gpu_model else "GPU"
            return never(f"has a {what}", f"has no {what}", "resources.gpu_model" if r.gpu_model else "resources.gpus")
        if most < r.gpus:
            return never(f"has {_gpus(r)} (at most {most})", f"has {most}, not {_gpus(r)}", "resources.gpus")
        pool = [n for n in pool if owned(n) >= r.gpus]
    most_cpu, most_memory = max(n.cpu for n in pool), max(n.memory for n in pool)
    if most_cpu < r.cpu_milli:
        return never(f"offers cpu={r.cpu_milli}m (the largest has {most_cpu}m)",
                     f"offers cpu={most_cpu}m, not cpu={r.cpu_milli}m", "resources.cpu_milli")
    if most_memory < r.memory_mib:
        return never(f"offers memory={r.memory_mib}MiB (the largest has {most_memory}MiB)",
                     f"offers memory={most_memory}MiB, not memory={r.memory_mib}MiB", "resources.memory_mib")
    pool = [n for n in pool if n.cpu >= r.cpu_milli and n.memory >= r.memory_mib]
    if not pool:
        return never(f"offers cpu={r.cpu_milli}m and memory={r.memory_mib}MiB together", "", "resources")
    # Some node could take it, none can now: say what stands in the way on the likeliest ones.
    likeliest = sorted(pool, key=lambda n: (n.status != "ready" or n.cordoned, -n.cpu_free, n.node_id))
    reasons = [_in_the_way(n, r) for n in likeliest[:EXPLAINED_NODES]]
    if len(pool) > EXPLAINED_NODES:
        reasons.append(f"{len(pool) - EXPLAINED_NODES} more")
    after = f" left for {field} after the {placed_before} before it" if placed_before else " now"
    detail = "; ".join(reasons)
    if pin:
        wants = ", ".join([f"cpu={r.cpu_milli}m memory={r.memory_mib}MiB"] + ([_gpus(r)] if r.gpus else []))
        return NoRoom(f"node {pin} cannot take {wants}{after}: {detail}", field=field, detail=detail)
    return NoRoom(f"no {waiting_for(d).removeprefix('a ')}{after}: {detail}", field=field, detail=detail)


def _in_the_way(n: NodeInventory, r: Resources) -> str:
    if n.status != "ready":
        return f"{n.node_id} is {n.status}"
    if n.cordoned:
        return f"{n.node_id} is cordoned"
    short = []
    if n.cpu_free < r.cpu_milli:
        short.append(f"{n.cpu_free}m cpu")
    if n.memory_free < r.memory_mib:
        short.append(f"{n.memory_free}MiB memory")
    if r.gpus:
        free = sum(1 for m in n.free_gpu_models if r.gpu_model is None or m == r.gpu_model)
        if free < r.gpus:
            short.append(f"{free} {r.gpu_model or 'GPU'}" + ("s" if free != 1 and not r.gpu_model else ""))
    if not short:  # the room went to the rest of the batch, or to someone else meanwhile
        short = [f"cpu={n.cpu_free}m memory={n.memory_free}MiB"]
    return f"{n.node_id} has {_and(short)} free"
