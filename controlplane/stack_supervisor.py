"""`controlplane up` supervises what it starts: a crashed node agent, supervisor or scheduler comes back.

Each child is restarted with backoff (0.5 s doubling to 30 s, reset once it has
stayed up a minute), and every restart is printed. What is down right now is
what /healthz reports as a degraded component.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = MIN_BACKOFF_S
    restart_at: float | None = None
    restarts: int = 0
    last_exit: int | None = field(default=None)
    #: lower stops first
    stop_rank: int = 0


class StackSupervisor:
    def __init__(self, *, say: Callable[[str], None] = print, poll_s: float = 0.5) -> None:
        self._children: list[Child] = []
        self._say = say
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stack-supervisor", daemon=True)

    def add(self, name: str, start: Callable[[], subprocess.Popen[bytes]], *, stop_rank: int = 0) -> None:
        child = Child(name, start, stop_rank=stop_rank)
        child.proc, child.started_at = start(), time.monotonic()
        with self._lock:
            self._children.append(child)
        if not self._thread.is_alive():
            self._thread.start()

    def down(self) -> list[str]:
        """Children not running now, each with how it ended and when it comes back."""
        out = []
        with self._lock:
            for c in self._children:
                if c.proc is None or c.proc.poll() is not None:
                    code = c.last_exit if c.proc is None else c.proc.returncode
                    out.append(f"{c.name} is down (exit code {code}; {c.restarts} restarts)")
        return out

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll_s):
            now = time.monotonic()
            with self._lock:
                children = list(self._children)
            for c in children:
                self._check(c, now)

    def _check(self, c: Child, now: float) -> None:
        if c.proc is not None and c.proc.poll() is None:
            if now - c.started_at >= STABLE_AFTER_S:
                c.backoff_s = MIN_BACKOFF_S
            return
        if c.restart_at is None:
            c.last_exit = c.proc.returncode if c.proc is not None else None
            c.restart_at = now + c.backoff_s
            self._say(f"{c.name} exited with code {c.last_exit}; restarting it in {c.backoff_s:g} s")
            return
        if now < c.restart_at or self._stopping.is_set():
            return
        try:
            c.proc, c.started_at = c.start(), now
        except OSError as exc:
            self._say(f"{c.name} could not be restarted: {exc}")
            c.proc = None
        c.restarts += 1
        c.restart_at = None
        c.backoff_s = min(MAX_BACKOFF_S, c.backoff_s * 2)
        if c.proc is not None:
            self._say(f"{c.name} restarted (restart {c.restarts}, pid {c.proc.pid})")

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Stop watching, then SIGTERM the children rank by rank (lowest first) and wait; SIGKILL what remains."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            children = sorted(self._children, key=lambda c: c.stop_rank)
        for rank in sorted({c.stop_rank for c in children}):
            procs = [c.proc for c in children if c.stop_rank == rank and c.proc is not None]
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
