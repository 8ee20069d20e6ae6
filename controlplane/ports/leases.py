"""Node leases: how the reaper knows which nodes are alive, kept off the graph's write path.

A node agent renews its lease every heartbeat; the reaper asks which of the
nodes it watches let theirs lapse. Kubernetes keeps node heartbeats in small
Lease objects apart from the Node for the same reason: liveness must not queue
behind big writes or expensive reads. The graph's `heartbeat_at` is a
low-rate mirror, there to be queried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class NodeLeases(Protocol):
    def renew(self, *, node_id: str, now: float) -> None:
        """The node is alive now. Raises Unavailable when the lease store cannot be reached."""

    def silent(self, *, node_ids: Sequence[str], now: float, grace_s: float) -> list[str]:
        """Those of `node_ids` whose lease is older than `grace_s`. Raises Unavailable when it cannot tell."""
