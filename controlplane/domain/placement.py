"""Placement: choose a node for each demand from a snapshot of candidate nodes.

Pure. The snapshot comes from a graph traversal (ready nodes with room, GPUs
of the wanted model through GPU_OWNER, neighbours within an RTT through
NEIGHBOR_OF) and may be stale by the time the reservation is committed: the
store re-checks every precondition inside the same atomic statement as the
creation, and the service retries with a fresh snapshot when it lost a race.

Score, best first: the preferred node (a restart stays where it was), fewest
allocations of the same spread key, lowest RTT to the parent's node, most free
cpu, then memory, then id (stable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.domain.errors import NoCapacity
from controlplane.domain.resources import NodeCapacity, Resources


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
            raise NoCapacity(_no_room(d), field=where)
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
