"""What the agent API needs besides the graph: one live agent per node, the node's work list, join credentials' uses.

Node agents talk only to the API (as kubelets talk only to the API server), so the
control plane keeps for each node, outside the graph:

- a **session**: the one agent process that may speak for the node now. Taken when an
  agent starts, renewed with every heartbeat together with the node's lease, checked
  on every report. A second agent of the same identity is refused while the first's
  session lives; one whose session another agent took is fenced off (its reports are
  refused, and it stops its processes). A lapsed session that nobody took is taken back.
- a **work list**: run and stop items for that node only, written by the control plane
  (the dispatcher), taken by the node's agent through the API and acknowledged once
  handled; an item taken and never acknowledged is handed out again (at least once;
  every item is idempotent, since each report is a guarded move).
- the **uses** of join credentials, each exchanged for node credentials at most so often.

Async where the API serves them from its event loop: liveness must not wait for a thread
behind user requests. The dispatcher pushes from the services' threads (`WorkSender`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Key = tuple[str, int]
#: the kinds of a node's work items
RUN = "run"
STOP = "stop"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """`run`: start these placed incarnations; `stop`: stop this one (one key)."""

    id: str
    kind: str
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class Opened:
    """A session taken (`refused` None), or why not: another agent holds the node for `held_ms` more."""

    refused: str | None = None
    held_ms: int = 0


class NodeSessions(Protocol):
    async def open(self, *, node_id: str, session: str, replaces: str | None, ttl_s: float) -> Opened:
        """Take the node for `session` when no session is live, or the live one is `replaces` (the dead predecessor
        on the same machine, whose session only it knew)."""

    async def renew(self, *, node_id: str, session: str, ttl_s: float) -> bool:
        """Keep the session and renew the node's lease (liveness) at once; False: another session holds the node."""

    async def holds(self, *, node_id: str, session: str, ttl_s: float) -> bool:
        """Whether `session` speaks for the node now (a lapsed session nobody took is taken back)."""

    async def close(self, *, node_id: str, session: str) -> None:
        """The agent stopped on purpose: its successor need not wait for the session to lapse."""


class WorkSender(Protocol):
    def push(self, *, node_id: str, items: Sequence[WorkItem]) -> None:
        """Append to the node's work list and wake its agent."""


class WorkQueue(Protocol):
    async def take(self, *, node_id: str, limit: int, wait_s: float) -> list[WorkItem]:
        """At most `limit` items, waiting up to `wait_s` for one; each is handed out again unless acknowledged."""

    async def ack(self, *, node_id: str, ids: Sequence[str]) -> int:
        """These items were handled; returns how many were still outstanding."""

    async def requeue(self, *, node_id: str) -> int:
        """A new agent process took the node: what its predecessor took and never acknowledged is handed out again."""


class JoinUses(Protocol):
    async def use(self, *, token_id: str, uses: int, until: float) -> bool:
        """Count one use of a join credential; False when all its `uses` are spent (nothing counted)."""
