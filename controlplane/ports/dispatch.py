"""How the services hand work on: signals to node agents, and (delayed) tasks to supervisors.

Celery implements it in workers/dispatch.py; `InProcessDispatcher` (services)
handles everything at once in one process, for tests and tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Key = tuple[str, int]  # (allocation id, incarnation)
#: a restart to carry out: (child id, the incarnation it replaces (a live one is stopped first), backoff level);
#: once that incarnation is replaced, the same restart delivered again does nothing
RestartKey = tuple[str, int, int]


class Dispatcher(Protocol):
    def run(self, *, node_id: str, items: Sequence[Key]) -> None:
        """Start these placed process allocations on their node's agent."""

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        """Signal a stopping process allocation on its node's agent."""

    def terminated(self, *, keys: Sequence[Key]) -> None:
        """These allocations reached a terminal state: their parents decide, watchers are told."""

    def restart(self, *, parent_id: str, items: Sequence[RestartKey], reason: str, countdown: float) -> None:
        """Carry out a restart decision after `countdown` seconds."""

    def start_native(self, *, keys: Sequence[Key]) -> None:
        """Start native allocations (their executors run in supervisor workers)."""
