"""Node leases kept in the graph itself (`heartbeat_at`): for one process with no broker (tests, tools).

The product keeps leases in Redis (controlplane/redis_leases.py); this one reads and
writes the same `heartbeat_at` property that the Redis leases are mirrored to, with
the caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from controlplane.ports.store import Repair, Topology


class _Store(Topology, Repair, Protocol):
    pass


class GraphLeases:
    def __init__(self, store: _Store) -> None:
        self.store = store

    def renew(self, *, node_id: str, now: float) -> None:
        self.store.heartbeat(node_id=node_id, now=now)

    def silent(self, *, node_ids: Sequence[str], now: float, grace_s: float) -> list[str]:
        watched = set(node_ids)
        return [n for n in self.store.stale_nodes(heartbeat_before=now - grace_s) if n in watched]
