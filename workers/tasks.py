"""Celery tasks: thin; they carry ids only and call the node agent or the supervisor of this worker process."""

from __future__ import annotations

from typing import Any

from workers.app import app
from workers.dispatch import RESTART, RUN, START_NATIVE, STOP, TERMINATED
from workers.runtime import current_agent, current_control


@app.task(name=RUN)
def run_allocations(items: list[list[Any]]) -> None:
    """items: [[allocation id, incarnation], ...] placed on this worker's node."""
    current_agent().run([(str(i), int(n)) for i, n in items])


@app.task(name=STOP)
def stop_allocation(allocation_id: str, incarnation: int) -> None:
    current_agent().stop(allocation_id, incarnation)


@app.task(name=TERMINATED)
def terminated(keys: list[list[Any]]) -> None:
    """Allocations reached a terminal state: their parents decide, watchers are told."""
    current_control().supervisor.on_terminated([(str(i), int(n)) for i, n in keys])


@app.task(name=RESTART)
def restart(parent_id: str, items: list[list[Any]], reason: str) -> None:
    current_control().supervisor.restart(parent_id, [(str(c), int(f), int(l)) for c, f, l in items], reason)


@app.task(name=START_NATIVE)
def start_native(keys: list[list[Any]]) -> None:
    """Native allocations were placed: their executors start here, in a supervisor."""
    current_control().native.start([(str(i), int(n)) for i, n in keys])
