"""Placement: choose a node for each demand from a snapshot of free capacity.

Pure: the snapshot may be stale by the time the reservation is committed; the
store re-checks every precondition inside the same atomic statement and the
service retries with a fresh snapshot when it lost a race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.domain.errors import NoCapacity
from controlplane.domain.resources import NodeCapacity, Resources


@dataclass(frozen=True, slots=True)
class Demand:
    resources: Resources
    node_id: str | None = None  # pinned to this node when given
    labels: tuple[str, ...] = ()  # every "key=value" label must be on the node
    prefer_node_id: str | None = None  # tried first when it fits (a restart stays where it was)


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    gpu_ids: tuple[str, ...]


def place(demands: Sequence[Demand], nodes: Sequence[NodeCapacity], *, field: str = "spec") -> list[Placement]:
    """First fit in a stable order (pinned node, else the node with the most free cpu), all or nothing."""
    free = {n.node_id: n for n in nodes}
    placements: list[Placement] = []
    for i, demand in enumerate(demands):
        where = f"{field}[{i}]" if len(demands) > 1 else field
        if demand.node_id is not None:
            candidates = [free[demand.node_id]] if demand.node_id in free else []
        else:
            candidates = sorted(
                free.values(), key=lambda n: (n.node_id != demand.prefer_node_id, -n.cpu_free, -n.memory_free, n.node_id)
            )
        chosen = next(
            (n for n in candidates if n.fits(demand.resources) and all(l in n.labels for l in demand.labels)),
            None,
        )
        if chosen is None:
            r = demand.resources
            target = f"node {demand.node_id}" if demand.node_id else "any ready node"
            gpu = f", {r.gpus} GPU(s){' ' + r.gpu_model if r.gpu_model else ''}" if r.gpus else ""
            raise NoCapacity(
                f"{target} has no room for cpu={r.cpu_milli}m memory={r.memory_mib}MiB{gpu}", field=where
            )
        after, gpu_ids = chosen.take(demand.resources)
        free[chosen.node_id] = after
        placements.append(Placement(node_id=chosen.node_id, gpu_ids=gpu_ids))
    return placements
