"""Measured usage on the graph: each live allocation's cpu seconds, memory now and at peak, throttling, at a modest period.

So a graph query can set what was reserved (`cpu`, `memory`) beside what is used (`usage_cpu_milli`,
`usage_memory_mib`, `usage_memory_peak_mib`, ...) on a node, a subtree or a job. One report per period for
every live allocation, in its own thread: a slow API delays the figures, never a start or a stop.
The exit report records the final figures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.processes import ProcessManager

log = logging.getLogger(__name__)

Key = tuple[str, int]


class UsageRecorder:
    def __init__(self, processes: ProcessManager, write: Callable[[list[tuple[Key, dict[str, Any]]]], None], *,
                 period_s: float) -> None:
        self.processes = processes
        self.write = write
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.period_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self) -> int:
        """Record the usage of every running allocation once, in one report; returns how many were recorded."""
        batch: list[tuple[Key, dict[str, Any]]] = []
        for key in self.processes.running():
            handle = self.processes.get(key)
            if handle is None or handle.confinement is None or handle.proc.returncode is not None:
                continue  # ended: its exit report carries the final figures
            fields = handle.confinement.usage()
            if fields is not None:
                batch.append((key, fields))
        if not batch:
            return 0
        try:
            self.write(batch)
        except Exception as exc:  # the API restarting: the next period tries again
            log.warning("could not record the usage of %d allocations: %s", len(batch), exc)
            return 0
        return len(batch)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except Exception:
                log.exception("usage sampling failed")
