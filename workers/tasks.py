"""Celery tasks: thin; they carry ids only and call the node agent of this worker process."""

from __future__ import annotations

from workers.app import app
from workers.dispatch import RUN, STOP
from workers.runtime import current_agent


@app.task(name=RUN)
def run_allocations(items: list[list]) -> None:  # type: ignore[type-arg]
    """items: [[allocation id, incarnation], ...] placed on this worker's node."""
    current_agent().run([(str(i), int(n)) for i, n in items])


@app.task(name=STOP)
def stop_allocation(allocation_id: str, incarnation: int) -> None:
    current_agent().stop(allocation_id, incarnation)
