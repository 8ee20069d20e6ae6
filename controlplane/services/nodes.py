"""Nodes join, heartbeat and are linked to their neighbours."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.domain.clock import wall_clock
from controlplane.domain.errors import InvalidInput, NotFound
from controlplane.domain.records import NodeRecord
from controlplane.domain.specs import NodeSpec, parse
from controlplane.domain.text import Id, checked
from controlplane.ports.store import Topology


class NodeService:
    def __init__(self, store: Topology, *, clock: Callable[[], float] = wall_clock) -> None:
        self.store = store
        self.clock = clock

    def register(self, spec: NodeSpec | Mapping[str, Any]) -> NodeRecord:
        node = parse(NodeSpec, spec, field="node")
        return self.store.register_node(spec=node, now=self.clock())

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
