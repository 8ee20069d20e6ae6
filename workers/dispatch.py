"""The dispatcher the control plane uses to hand work on over Celery: to node agents and to supervisors."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from workers.app import CONTROL_QUEUE, node_queue

RUN = "controlplane.run_allocations"
STOP = "controlplane.stop_allocation"
TERMINATED = "controlplane.terminated"
RESTART = "controlplane.restart"
START_NATIVE = "controlplane.start_native"
#: allocations per run message: one graph request per step for the whole chunk on the agent
CHUNK = 64


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def run(self, *, node_id: str, items: Sequence[tuple[str, int]]) -> None:
        with self.app.producer_or_acquire() as producer:
            for i in range(0, len(items), CHUNK):
                chunk = [[a, n] for a, n in items[i : i + CHUNK]]
                self.app.send_task(RUN, args=[chunk], queue=node_queue(node_id), producer=producer)

    def stop(self, *, node_id: str, allocation_id: str, incarnation: int) -> None:
        self.app.send_task(STOP, args=[allocation_id, incarnation], queue=node_queue(node_id))

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
