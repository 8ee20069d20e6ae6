"""Measured usage on the graph: each live allocation's cpu seconds, memory now and at peak, throttling, at a modest period.

So a graph query can set what was reserved (`cpu`, `memory`) beside what is used (`usage_cpu_milli`,
`usage_memory_mib`, `usage_memory_peak_mib`, ...) on a node, a subtree or a job. One write per live
allocation per period, in its own thread: a slow graph delays the figures, never a start or a stop.
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
    def __init__(self, processes: ProcessManager, write: Callable[[Key, dict[str, Any]], None], *, period_s: float) -> None:
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
        """Record the usage of every running allocation once; returns how many were recorded."""
        recorded = 0
        for key in self.processes.running():
            handle = self.processes.get(key)
            if handle is None or handle.confinement is None or handle.proc.returncode is not None:
                continue  # ended: its exit report carries the final figures
            fields = handle.confinement.usage()
            if fields is None:
                continue
            try:
                self.write(key, fields)
                recorded += 1
            except Exception as exc:  # the graph restarting: the next period tries again
                log.warning("could not record usage of %s: %s", key, exc)
        return recorded

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except Exception:
                log.exception("usage sampling failed")
