"""Celery tasks of the control plane's own workers (supervisors): thin; they carry ids only.

Node agents run no Celery task: their work comes from the agent API (workers/agent.py)."""

from __future__ import annotations

from typing import Any

from workers.app import app
from workers.dispatch import RESTART, START_NATIVE, TERMINATED
from workers.runtime import current_control


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
