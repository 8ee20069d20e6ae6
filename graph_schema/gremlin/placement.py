"""GremlinStore's placement reads: candidate nodes (room, labels, free GPUs through GPU_OWNER) and spread counts.

The Gremlin counterpart of the placement statements in cypher/statements.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Order, P

from controlplane.domain.lifecycle import LIVE
from controlplane.domain.placement import NodeInventory
from controlplane.domain.resources import FreeGpu, NodeCapacity
from graph_schema.gremlin.remote import value
from graph_schema.gremlin.steps import GPU_OWNER, A, G, N, having

if TYPE_CHECKING:
    from graph_schema.gremlin.remote import Remote

_LIVE = sorted(s.value for s in LIVE)


def capacity_projection(t: GraphTraversal) -> GraphTraversal:
    """From Node vertices: what placement needs, free GPUs included."""
    free_gpus = __.in_(GPU_OWNER).has_label(G).not_(__.has("claimed_by")).project("id", "model").by("id").by("model").fold()
    return (
        t.project("id", "status", "labels", "cpu_free", "memory_free", "gpus")
        .by("id").by("status").by("labels").by("cpu_free").by("memory_free").by(free_gpus)
    )


def capacity(r: dict[str, Any]) -> NodeCapacity:
    return NodeCapacity(
        node_id=r["id"], status=r["status"], labels=tuple(r.get("labels") or ()),
        cpu_free=int(r["cpu_free"]), memory_free=int(r["memory_free"]),
        free_gpus=tuple(sorted((FreeGpu(x["id"], x["model"]) for x in r["gpus"]), key=lambda x: x.id)),
    )


class PlacementMixin:
    _remote: Remote

    def candidates(
        self, *, cpu: int, memory: int, gpus: int, gpu_model: str | None, labels: Sequence[str],
        node_ids: Sequence[str] | None, limit: int,
    ) -> list[NodeCapacity]:
        if node_ids is not None and not node_ids:
            return []

        def build(g: Any) -> GraphTraversal:
            t = g.V(*dict.fromkeys(node_ids)).has_label(N) if node_ids is not None else having(g, N, "status", ["ready"])
            t = t.has("status", "ready").not_(__.has("cordoned", True))
            t = t.has("cpu_free", P.gte(value(cpu))).has("memory_free", P.gte(value(memory)))
            for label in labels:
                t = t.where(__.values("labels").unfold().is_(label))
            if gpus:
                free = __.in_(GPU_OWNER).has_label(G).not_(__.has("claimed_by"))
                if gpu_model is not None:
                    free = free.has("model", gpu_model)
                t = t.where(free.count().is_(P.gte(value(gpus))))
            return capacity_projection(t.order().by("cpu_free", Order.desc).by("id").limit(int(limit)))

        return [capacity(r) for r in self._remote.run(build, write=False)]

    def node_inventory(self, *, labels: Sequence[str], node_ids: Sequence[str] | None, limit: int) -> list[NodeInventory]:
        if node_ids is not None and not node_ids:
            return []

        def build(g: Any) -> GraphTraversal:
            t = g.V(*dict.fromkeys(node_ids)).has_label(N) if node_ids is not None else g.V().has_label(N)
            for label in labels:
                t = t.where(__.values("labels").unfold().is_(label))
            gpus = __.in_(GPU_OWNER).has_label(G).project("model", "free").by("model").by(
                __.choose(__.has("claimed_by"), __.constant(False), __.constant(True))).fold()
            return (
                t.order().by("cpu", Order.desc).by("id").limit(int(limit))
                .project("id", "status", "labels", "cpu", "memory", "cpu_free", "memory_free", "gpus", "cordoned")
                .by("id").by("status").by("labels").by("cpu").by("memory").by("cpu_free").by("memory_free").by(gpus)
                .by(__.coalesce(__.values("cordoned"), __.constant(False)))
            )

        out = []
        for r in self._remote.run(build, write=False):
            gpus = sorted((str(x["model"]), bool(x["free"])) for x in r["gpus"])
            out.append(NodeInventory(
                node_id=r["id"], status=r["status"], labels=tuple(r.get("labels") or ()), cpu=int(r["cpu"]),
                memory=int(r["memory"]), cpu_free=int(r["cpu_free"]), memory_free=int(r["memory_free"]),
                gpu_models=tuple(m for m, _ in gpus), free_gpu_models=tuple(m for m, free in gpus if free),
                cordoned=bool(r["cordoned"]),
            ))
        return out

    def spread_counts(self, *, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        if not keys:
            return {}
        rows = self._remote.run(
            lambda g: having(g, A, "spread_key", list(keys)).has("state", P.within(_LIVE))
            .project("k", "n").by("spread_key").by("node_id"),
            write=False,
        )
        return dict(Counter((r["k"], r["n"]) for r in rows))
