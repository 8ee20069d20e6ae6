"""The dispatcher the control plane uses to hand work on: to node agents through their work lists, to supervisors
over Celery.

Node agents never touch the broker: what a node is to run or stop goes to that node's
work list (controlplane/redis_agents.py), which its agent takes through the agent API
with its node credential. Supervisors are the control plane's own workers, on the
`control` queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from celery import Celery

from controlplane.ports.agents import RUN, STOP, WorkItem, WorkSender
from workers.app import CONTROL_QUEUE

__all__ = ["RESTART", "RUN", "START_NATIVE", "STOP", "TERMINATED", "CeleryDispatcher"]

TERMINATED = "controlplane.terminated"
RESTART = "controlplane.restart"
START_NATIVE = "controlplane.start_native"
#: allocations per run message: one graph request per step for the whole chunk on the agent
CHUNK = 64


class CeleryDispatcher:
    def __init__(self, app: Celery, work: WorkSender) -> None:
        self.app = app
        #: the nodes' work lists: run and stop, for the node's agent only
        self.work = work

    def run(self, *, node_id: str, items: Sequence[tuple[str, int]]) -> None:
        self.work.push(node_id=node_id, items=[
            WorkItem(uuid.uuid4().hex, RUN, tuple(items[i : i + CHUNK])) for i in range(0, len(items), CHUNK)])

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        self.work.push(node_id=node_id, items=[WorkItem(uuid.uuid4().hex, STOP, ((allocation_id, incarnation),))])

    def terminated(self, *, keys: Sequence[tuple[str, int]]) -> None:
        if keys:
            self.app.send_task(TERMINATED, args=[[[a, n] for a, n in keys]], queue=CONTROL_QUEUE)

    def start_native(self, *, keys: Sequence[tuple[str, int]]) -> None:
        if keys:
            self.app.send_task(START_NATIVE, args=[[[a, n] for a, n in keys]], queue=CONTROL_QUEUE)

    def restart(self, *, parent_id: str, items: Sequence[tuple[str, int, int]], reason: str, countdown: float) -> None:
        self.app.send_task(
            RESTART, args=[parent_id, [list(i) for i in items], reason], queue=CONTROL_QUEUE, countdown=max(0.0, countdown)
        )
