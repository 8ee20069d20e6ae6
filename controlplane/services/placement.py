"""The one placement path: spawn, restart, node-loss rescheduling and jobs all place through `Placer`.

Candidates come from a graph traversal per demand shape (ready nodes with room,
free GPUs of the model through GPU_OWNER, the labels, neighbours of the
parent's node within an RTT through NEIGHBOR_OF); the pure `place()` picks the
best. Nothing here scans every node: when a batch needs more nodes than the
first candidates hold, the traversal is asked again for more. When nothing fits,
the failing demand is explained from the nodes' inventory (`explain`): could
never (Unsatisfiable, INVALID_INPUT) or not now (NoCapacity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from controlplane.domain.placement import ISOLATED, Demand, NoRoom, Placement, explain, place
from controlplane.domain.records import AllocationRecord
from controlplane.domain.resources import NodeCapacity, Resources
from controlplane.ports.store import PlacementReads

#: candidates asked for beyond a shape's count, and how much more each further round asks for
CANDIDATE_SLACK = 16
GROWTH = 8
#: nodes read to explain a placement that failed (the most cpu first)
INVENTORY_LIMIT = 1000


class _Shape(NamedTuple):
    """Demands that the same candidate traversal answers."""

    cpu: int
    memory: int
    gpus: int
    model: str | None
    labels: tuple[str, ...]
    pinned: str | None
    near: float | None


def demand_of(a: AllocationRecord, *, stay: bool = True) -> Demand:
    """What a restart of `a` asks for: its resources and its stored constraints (a restart prefers its node)."""
    return Demand(
        resources=Resources(a.cpu, a.memory, a.gpus, a.gpu_model),
        node_id=a.pin,
        labels=a.node_labels,
        prefer_node_id=a.node_id if stay else None,
        max_rtt_ms=a.max_rtt_ms,
        spread_key=a.spread_key,
    )


class Placer:
    def __init__(self, store: PlacementReads) -> None:
        self.store = store

    def place(self, demands: Sequence[Demand], origin: str, *, field: str) -> list[Placement]:
        """A node (and GPUs) for each demand, all or nothing; `origin` is the node of the parent (RTTs are from it).

        Raises Unsatisfiable (no node could ever take a demand) or NoCapacity (none can now), naming the demand."""
        rtt: dict[str, float] = {}
        if any(d.max_rtt_ms is not None for d in demands):
            rtt = {origin: 0.0, **{n.node_id: n.rtt_ms for n in self.store.neighbors(node_id=origin)}}
        keys = sorted({d.spread_key for d in demands if d.spread_key})
        spread = self.store.spread_counts(keys=keys) if keys else {}
        shapes: dict[_Shape, int] = {}
        for d in demands:
            r = d.resources
            shape = _Shape(r.cpu_milli, r.memory_mib, r.gpus, r.gpu_model, d.labels, d.node_id, d.max_rtt_ms)
            shapes[shape] = shapes.get(shape, 0) + 1
        limits = {shape: count + CANDIDATE_SLACK for shape, count in shapes.items()}
        while True:
            nodes: dict[str, NodeCapacity] = {}
            exhausted = []  # shapes whose every fitting node is already in `nodes`
            for shape, limit in limits.items():
                ids = [shape.pinned] if shape.pinned else (
                    [n for n, ms in rtt.items() if ms <= shape.near] if shape.near is not None else None)
                found = self.store.candidates(cpu=shape.cpu, memory=shape.memory, gpus=shape.gpus, gpu_model=shape.model,
                                              labels=shape.labels, node_ids=ids, limit=limit)
                if len(found) < limit:
                    exhausted.append(shape)
                nodes.update((c.node_id, c) for c in found)
            try:
                return place(demands, list(nodes.values()), rtt_ms=rtt, spread=spread, field=field)
            except NoRoom as refused:
                if len(exhausted) == len(limits):
                    raise self._explain(demands[refused.index], rtt, field=refused.field or field,
                                        placed_before=refused.index) from None
                # a batch bigger than the best candidates hold: ask the traversal for more of them
                limits = {shape: limit if shape in exhausted else limit * GROWTH for shape, limit in limits.items()}

    def _explain(self, d: Demand, rtt: dict[str, float], *, field: str, placed_before: int) -> Exception:
        # by the labels asked for by name: whether a node enforces isolation is what explain() tells apart
        asked = tuple(label for label in d.labels if label != ISOLATED)
        inventory = self.store.node_inventory(labels=asked, node_ids=[d.node_id] if d.node_id else None,
                                              limit=INVENTORY_LIMIT)
        if d.node_id and not inventory:  # the pinned node without its labels: say which are missing
            inventory = self.store.node_inventory(labels=(), node_ids=[d.node_id], limit=1)
        return explain(d, inventory, rtt_ms=rtt, field=field, placed_before=placed_before)
