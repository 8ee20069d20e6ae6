"""Supervision without a broker: terminations, restarts and native starts handled at once in this process.

For tests and tools. No node agents: nothing runs processes, so `run` and
`stop` have no one to tell. The assembly point binds it to the supervisor and
the native runner it feeds (a callback, not a service holding another).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controlplane.ports.dispatch import Key, RestartKey


def _unbound(*_: object) -> None:
    raise RuntimeError("InProcessDispatcher used before the assembly point bound it")


class InProcessDispatcher:
    MAX_RESTART_POLLS = 100

    def __init__(self) -> None:
        self._polls = 0
        self._terminated: Callable[[Sequence[Key]], None] = _unbound
        self._restart: Callable[[str, Sequence[RestartKey], str], object] = _unbound
        self._start_native: Callable[[Sequence[Key]], None] = _unbound

    def bind(
        self,
        *,
        terminated: Callable[[Sequence[Key]], None],
        restart: Callable[[str, Sequence[RestartKey], str], object],
        start_native: Callable[[Sequence[Key]], None],
    ) -> None:
        self._terminated, self._restart, self._start_native = terminated, restart, start_native

    def run(self, *, node_id: str, items: Sequence[Key]) -> None:
        return None

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        return None

    def terminated(self, *, keys: Sequence[Key]) -> None:
        self._terminated(keys)

    def start_native(self, *, keys: Sequence[Key]) -> None:
        self._start_native(keys)

    def restart(self, *, parent_id: str, items: Sequence[RestartKey], reason: str, countdown: float) -> None:
        # No delayed delivery here: restart at once (a subtree still stopping re-schedules, bounded).
        self._polls += 1
        try:
            if self._polls <= self.MAX_RESTART_POLLS:
                self._restart(parent_id, items, reason)
        finally:
            self._polls -= 1
